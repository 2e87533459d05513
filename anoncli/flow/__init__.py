"""Flow-latent rotation (FFEM, seed 001; METHODS.md §7): the maths, independent of the flow network."""
