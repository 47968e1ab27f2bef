"""Any user image opens as the RGB picture a model reads: modes converted correctly, bombs and
non-images refused with clear errors."""

import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from emulate.vision.images import MAX_PIXELS, ImageFileError, load_image


def png_header(path, width, height):
    """A tiny PNG whose header claims width x height (nothing decodes it)."""

    def chunk(kind, data):
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    data = chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + data)
    return path


@pytest.mark.parametrize("side", [20000, 9000])
def test_a_decompression_bomb_is_refused(tmp_path, side):
    path = png_header(tmp_path / "bomb.png", side, side)
    assert path.stat().st_size < 100
    with pytest.raises(ImageFileError, match="pixel"):
        load_image(path)
    assert side * side > MAX_PIXELS


def test_16_bit_gray_is_scaled_not_saturated(tmp_path):
    values = np.linspace(0, 65535, 64 * 64).astype(np.uint16).reshape(64, 64)
    Image.fromarray(values).save(tmp_path / "deep.png")
    pixels = np.asarray(load_image(tmp_path / "deep.png"))
    expected = np.rint(values.astype(np.float64) * 255 / 65535)
    assert np.abs(pixels[..., 0].astype(np.float64) - expected).max() <= 1
    assert (pixels == 255).mean() < 0.01
    assert np.array_equal(pixels[..., 0], pixels[..., 2])


def test_rgba_is_composited_on_white(tmp_path):
    Image.new("RGBA", (8, 8), (255, 0, 0, 128)).save(tmp_path / "alpha.png")
    Image.new("RGBA", (8, 8), (0, 0, 0, 0)).save(tmp_path / "clear.png")
    half = load_image(tmp_path / "alpha.png").getpixel((3, 3))
    assert half[0] == 255 and all(abs(c - 127) <= 1 for c in half[1:])
    assert load_image(tmp_path / "clear.png").getpixel((0, 0)) == (255, 255, 255)


def test_palette_with_transparency_grayscale_and_cmyk(tmp_path):
    palette = Image.new("P", (4, 4), 1)
    palette.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    palette.save(tmp_path / "p.png", transparency=0)
    assert load_image(tmp_path / "p.png").getpixel((0, 0)) == (10, 200, 30)
    transparent = Image.new("P", (4, 4), 0)
    transparent.putpalette([9, 9, 9] + [0] * 765)
    transparent.save(tmp_path / "t.png", transparency=0)
    assert load_image(tmp_path / "t.png").getpixel((0, 0)) == (255, 255, 255)
    Image.new("L", (4, 4), 77).save(tmp_path / "l.png")
    assert load_image(tmp_path / "l.png").getpixel((1, 1)) == (77, 77, 77)
    Image.new("CMYK", (4, 4), (0, 0, 0, 0)).save(tmp_path / "c.jpg")
    assert load_image(tmp_path / "c.jpg").mode == "RGB"


def test_missing_and_non_image_files_are_clear_errors(tmp_path):
    with pytest.raises(ImageFileError, match="no image file"):
        load_image(tmp_path / "nowhere.png")
    (tmp_path / "notes.png").write_text("not an image")
    with pytest.raises(ImageFileError, match="not a readable image"):
        load_image(tmp_path / "notes.png")
