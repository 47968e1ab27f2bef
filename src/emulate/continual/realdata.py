"""Real images: a folder per class (``root/<class>/*.png|jpg``), read into the same ``ImageSet``
the synthetic universe yields, at a CLIP's input size, so zero-shot accuracy over the full label
set (``metrics``, ``clip.zero_shot_accuracy``) runs unchanged on real data and checkpoints."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from emulate.common.errors import EmulateError
from emulate.continual.universe import ImageSet

SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp"}


class ImageFolderError(EmulateError, ValueError):
    """A folder that is not one sub-folder of images per class."""


def square(image, size: int) -> np.ndarray:
    """Centre-crop to a square, resize to ``size``, RGB uint8."""
    from PIL import Image

    image = image.convert("RGB")
    side = min(image.size)
    left, top = (image.width - side) // 2, (image.height - side) // 2
    image = image.crop((left, top, left + side, top + side))
    return np.asarray(image.resize((size, size), Image.Resampling.BICUBIC), dtype=np.uint8)


def image_folder(root: str | Path, image_size: int) -> ImageSet:
    """Every image under ``root/<class>/``; class names are the folder names, sorted."""
    from PIL import Image

    root = Path(root)
    classes = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    if not classes:
        raise ImageFolderError(
            f"{root} has no class folders; lay images out as {root}/<class name>/<image>.png"
        )
    images, labels = [], []
    for i, name in enumerate(classes):
        for path in sorted((root / name).iterdir()):
            if path.suffix.lower() in SUFFIXES:
                with Image.open(path) as image:
                    images.append(square(image, image_size))
                labels.append(i)
    if not images:
        raise ImageFolderError(f"{root}'s class folders hold no images ({sorted(SUFFIXES)})")
    return ImageSet(np.stack(images), np.array(labels), classes)
