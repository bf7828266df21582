import numpy as np
import pytest
from PIL import Image

from ensemble_color.io import ImageLoadError, load_image, save_image, to_pil


def _gradient(w=40, h=30):
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 6, y * 8, (x + y) * 3], -1).astype(np.uint8)


def test_exif_rotation_is_applied(tmp_path):
    arr = _gradient(40, 30)
    im = Image.fromarray(arr)
    exif = im.getexif()
    exif[0x0112] = 6  # rotate 90° clockwise when displayed
    im.save(tmp_path / "rot.jpg", exif=exif)
    loaded = load_image(tmp_path / "rot.jpg")
    assert loaded.size == (30, 40)  # width, height swapped


@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA", "P", "CMYK", "I;16", "LA", "1"])
def test_modes_decode_to_rgb(tmp_path, mode):
    arr = _gradient()
    im = Image.fromarray(arr)
    im = Image.fromarray(arr[..., 0].astype(np.uint16) * 257) if mode == "I;16" else im.convert(mode)
    suffix = ".jpg" if mode == "CMYK" else ".png"
    path = tmp_path / f"x{suffix}"
    im.save(path)
    loaded = load_image(path)
    assert loaded.rgb.shape == (3, 30, 40)
    assert loaded.rgb.min() >= 0 and loaded.rgb.max() <= 1
    if mode == "I;16":
        assert loaded.bit_depth == 16 and abs(loaded.rgb.max().item() - arr[..., 0].max() / 255) < 1e-3
    if mode in ("RGBA", "LA"):
        assert loaded.alpha is not None
    assert loaded.was_color == (mode in ("RGB", "RGBA", "P", "CMYK"))


def test_bad_files_raise_one_line_errors_naming_the_file(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "trunc.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 30)
    for name in ["notes.txt", "trunc.png", "missing.jpg"]:
        with pytest.raises(ImageLoadError) as err:
            load_image(tmp_path / name)
        assert name in str(err.value) and "\n" not in str(err.value)


def test_size_limit(tmp_path):
    Image.fromarray(_gradient(400, 300)).save(tmp_path / "big.png")
    with pytest.raises(ImageLoadError, match="limit"):
        load_image(tmp_path / "big.png", max_pixels=100_000)


def test_save_is_atomic_and_by_extension(tmp_path):
    im = to_pil(np.zeros((8, 8, 3), np.uint8))
    save_image(im, tmp_path / "a.jpg")
    assert Image.open(tmp_path / "a.jpg").format == "JPEG"
    assert [p.name for p in tmp_path.iterdir()] == ["a.jpg"]  # no temp files left
    with pytest.raises(ValueError, match="unsupported"):
        save_image(im, tmp_path / "a.xyz")


def test_saved_outputs_get_the_mode_a_plain_open_gives(tmp_path):
    """The temporary file behind an atomic save is 0o600; the output must not stay private to its writer."""
    import os
    import stat

    old = os.umask(0o022)
    try:
        save_image(to_pil(np.zeros((4, 4, 3), np.uint8)), tmp_path / "a.png")
        (tmp_path / "plain").write_bytes(b"")
    finally:
        os.umask(old)
    mode = stat.S_IMODE((tmp_path / "a.png").stat().st_mode)
    assert mode == stat.S_IMODE((tmp_path / "plain").stat().st_mode) == 0o644
