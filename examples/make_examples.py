"""Rebuild the bundled example images from public-domain / CC0 sources shipped in scikit-image.

    python examples/make_examples.py      (needs scikit-image; the images are committed)

astronaut: Eileen Collins, NASA, public domain. camera: CC0 (Lav Varshney).
Derived images: a group photo, a tilted face, a greyscale PNG, a face at the image border.
"""
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps
from skimage import data

HERE = Path(__file__).resolve().parent / "images"


def main() -> None:
    HERE.mkdir(exist_ok=True)
    astronaut = Image.fromarray(data.astronaut())
    camera = Image.fromarray(data.camera())
    astronaut.save(HERE / "astronaut.jpg", quality=90)
    camera.save(HERE / "camera.png")

    group = Image.new("RGB", (960, 420), (40, 44, 52))
    group.paste(astronaut.resize((420, 420)), (0, 0))
    group.paste(ImageOps.mirror(astronaut).resize((300, 300)), (450, 60))
    group.paste(astronaut.convert("L").convert("RGB").resize((200, 200)), (760, 110))
    (HERE / "group").mkdir(exist_ok=True)
    group.save(HERE / "group" / "three-faces.png")

    astronaut.rotate(25, resample=Image.BICUBIC, expand=True, fillcolor=(128, 128, 128)).save(HERE / "tilted.jpg", quality=92)
    astronaut.convert("L").save(HERE / "group" / "grey.png")
    border = np.asarray(astronaut)[60:, 130:]  # face close to the left/top edge
    Image.fromarray(np.ascontiguousarray(border)).save(HERE / "border.webp", quality=90)


if __name__ == "__main__":
    main()
