"""Opening any user image as the RGB picture a model reads, or refusing it with a clear error.

Files come from users and benchmarks in every mode PIL knows: transparency is composited on
white (dropping alpha would reveal whatever colour the transparent pixels happen to hold),
16-bit and 32-bit channels are scaled to 8 bits (a plain ``convert`` saturates them), palette,
grayscale, CMYK and the rest go through PIL's own conversion. A header that claims more than
``MAX_PIXELS`` pixels is refused before anything is decoded (a 69-byte PNG can claim 20000²).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from emulate.common.errors import EmulateError

MAX_PIXELS = 8192 * 8192
MAX_BYTES = 256 * 1024 * 1024
WIDE_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")


class ImageFileError(EmulateError, ValueError):
    """A file that cannot be read as an image within the limits."""


def load_image(path: str | Path) -> Image.Image:
    """The file's first frame as an 8-bit RGB image, upright per its EXIF orientation."""
    path = Path(path)
    if not path.is_file():
        raise ImageFileError(f"no image file at {path}; give the path of an image file")
    if path.stat().st_size > MAX_BYTES:
        raise ImageFileError(f"{path} is over {MAX_BYTES // 2**20} MiB; give a smaller image")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                check_size(image.size, path)
                image.load()
                return to_rgb(ImageOps.exif_transpose(image))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageFileError(
            f"{path} declares more pixels than is safe to decode; give an image under "
            f"{MAX_PIXELS:,} pixels"
        ) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        if isinstance(exc, EmulateError):
            raise
        raise ImageFileError(f"{path} is not a readable image ({exc})") from None


def check_size(size: tuple[int, int], name: str | Path = "the image") -> None:
    width, height = size
    if width < 1 or height < 1:
        raise ImageFileError(f"{name} is {width}x{height}: it holds no pixels")
    if width * height > MAX_PIXELS:
        raise ImageFileError(
            f"{name} is {width}x{height} ({width * height:,} pixels), over the {MAX_PIXELS:,} "
            "pixel limit; downscale it first"
        )


def to_rgb(image: Image.Image) -> Image.Image:
    """8-bit RGB: alpha composited on white, wide integer and float channels scaled."""
    if image.mode in WIDE_MODES:
        return _scaled(np.asarray(image, dtype=np.float64), 65535.0)
    if image.mode == "F":
        values = np.asarray(image, dtype=np.float64)
        finite = values[np.isfinite(values)]
        top = 1.0 if finite.size == 0 or finite.max() <= 1.0 else 255.0
        return _scaled(np.nan_to_num(values), top)
    if image.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return image.convert("RGB")


def _scaled(values: np.ndarray, top: float) -> Image.Image:
    """A one-channel array whose full scale is ``top``, as 8-bit gray in RGB."""
    gray = np.clip(np.rint(values * (255.0 / top)), 0, 255).astype(np.uint8)
    return Image.fromarray(gray, mode="L").convert("RGB")
