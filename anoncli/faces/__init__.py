"""Face stage: detection, alignment to a template, blending back into the frame."""
