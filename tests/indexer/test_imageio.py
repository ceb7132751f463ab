"""Decoding: every mode becomes upright RGB; every bad file becomes an ImageError with a reason."""

from __future__ import annotations

import io
from datetime import datetime

import numpy as np
import pytest
from PIL import Image

from indexer.imageio import ImageError, load_image, to_rgb
from tests.conftest import TEST_DATA

BAD = TEST_DATA / "bad"


def jpeg_bytes(img: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", **kw)
    return buf.getvalue()


def test_rgba_is_composited_over_white():
    img = Image.new("RGBA", (8, 8), (255, 0, 0, 0))  # fully transparent red
    img.putpixel((0, 0), (0, 0, 255, 255))
    rgb = to_rgb(img)
    assert rgb.mode == "RGB"
    assert rgb.getpixel((1, 1)) == (255, 255, 255)
    assert rgb.getpixel((0, 0)) == (0, 0, 255)


def test_grayscale_and_16bit_become_rgb_with_their_contrast():
    gray = Image.new("L", (4, 4), 77)
    assert to_rgb(gray).getpixel((0, 0)) == (77, 77, 77)
    a = np.zeros((4, 4), dtype=np.uint16)
    a[0, 0] = 60000
    deep = Image.fromarray(a)
    assert deep.mode.startswith("I;16")
    rgb = np.asarray(to_rgb(deep))
    assert rgb[0, 0].tolist() == [255, 255, 255]  # full range kept, not clipped to white everywhere
    assert rgb[1, 1].tolist() == [0, 0, 0]


def test_exif_orientation_is_applied_and_facts_read():
    # Stored landscape 40x20 with the left half red; orientation 6 means "rotate 90° clockwise".
    img = Image.new("RGB", (40, 20), (0, 0, 255))
    img.paste((255, 0, 0), (0, 0, 20, 20))
    exif = Image.Exif()
    exif[0x0112] = 6
    exif[0x010F] = "Canon"
    exif[0x0110] = "Canon EOS 5D"
    exif.get_ifd(0x8769)[0x9003] = "2021:07:04 10:30:00"
    out, info = load_image(jpeg_bytes(img, exif=exif, quality=95))
    assert out.size == (20, 40)
    assert (info.width, info.height) == (20, 40)
    r, g, b = out.getpixel((10, 5))  # the red half is on top after the rotation
    assert r > 200 and b < 60
    assert info.taken_at == datetime(2021, 7, 4, 10, 30)
    assert info.camera == "Canon EOS 5D"
    assert info.format == "JPEG"


def test_large_jpeg_decodes_at_reduced_scale_but_reports_full_size():
    big = Image.new("RGB", (4000, 3000), (10, 200, 30))
    out, info = load_image(jpeg_bytes(big), min_side=256)
    assert (info.width, info.height) == (4000, 3000)
    assert 256 <= min(out.size) < 3000  # draft took a smaller DCT scale
    full, _ = load_image(jpeg_bytes(big))
    assert full.size == (4000, 3000)


@pytest.mark.parametrize(
    "name, reason",
    [
        ("pillow__decompression_bomb.gif", "decompression bomb"),
        ("pillow__bmp__b__badwidth.bmp", "decompression bomb"),
        ("pillow__truncated_jpeg.jpg", "corrupt image"),
        ("pillow__truncated_image.png", "corrupt image"),
        ("pillow__png_decompression_dos.png", "corrupt image"),
        ("generated__zero_bytes.jpg", "empty file"),
        ("pillow__test-ole-file.doc", "not an image"),
    ],
)
def test_bad_files_raise_image_error_with_reason(name, reason):
    with pytest.raises(ImageError) as err:
        load_image(BAD / name)
    assert err.value.reason == reason
    assert str(err.value).startswith(reason)


def test_a_read_the_system_refuses_is_unreadable_not_corrupt(tmp_path):
    """An OSError with an errno (EISDIR here; EACCES, EIO alike) comes from reading, not from the
    bytes: a later run tries the photo again (indexer.rows.READ_FAILURES), a corrupt one it does not."""
    (tmp_path / "folder.jpg").mkdir()
    with pytest.raises(ImageError) as err:
        load_image(tmp_path / "folder.jpg")
    assert err.value.reason == "unreadable file"
    with pytest.raises(ImageError) as err:
        load_image(tmp_path / "gone.jpg")
    assert err.value.reason == "missing file"


@pytest.mark.parametrize(
    "name",
    [
        "pdq__misc-images__modes__CMYK.jpg",
        "pillow__apng__mode_16bit.png",
        "pillow__tiff_16bit_RGB.tiff",
        "pillow__iss634.gif",  # animated: first frame
        "pillow__transparent.png",
        "pillow__hopper_orientation_6.jpg",
    ],
)
def test_odd_but_valid_files_decode_to_rgb(name):
    img, info = load_image(BAD / name)
    assert img.mode == "RGB"
    assert img.size == (info.width, info.height)
    assert np.asarray(img).std() > 1  # real content, not a blank canvas


def test_bytes_and_path_decode_identically():
    path = BAD / "pillow__hopper_orientation_6.jpg"
    a, _ = load_image(path)
    b, _ = load_image(path.read_bytes())
    assert np.array_equal(np.asarray(a), np.asarray(b))


def test_garbage_bytes_are_not_an_image():
    with pytest.raises(ImageError) as err:
        load_image(b"<html>not a photo</html>")
    assert err.value.reason == "not an image"


def test_split_preprocessing_equals_the_torchvision_pipeline():
    """Workers crop to uint8 and batches are normalised later: the library's recorded preprocessing
    (`resize256-bicubic-crop224-...`) must still mean torchvision's one-piece transform."""
    import torch
    from torchvision.transforms import v2 as T

    from indexer.backbone import BACKBONES

    pre = BACKBONES["efficientnet_lite0"].preprocess
    reference = T.Compose([
        T.PILToTensor(),
        T.Resize(pre.resize, interpolation=T.InterpolationMode.BICUBIC, antialias=True),
        T.CenterCrop(pre.crop),
        T.ToDtype(torch.float32, scale=True),
        T.Normalize(pre.mean, pre.std),
    ])
    img, _ = load_image(BAD / "pillow__transparent.png")
    split = pre.normalize(pre.crop_uint8(img).unsqueeze(0))[0]
    assert split.shape == (3, pre.crop, pre.crop)
    assert torch.allclose(split, reference(img), atol=1e-6)


def test_messages_name_bytes_not_python_objects(tmp_path):
    with pytest.raises(ImageError) as e:
        load_image(b"<html>not a photo</html>")
    assert str(e.value) == "not an image: cannot identify image file <24 bytes>"
    assert "0x" not in str(e.value) and "_io." not in str(e.value)


def test_libtiff_prints_nothing_of_its_own(tmp_path):
    """libtiff writes straight to file descriptor 2; run in a fresh process to see every byte."""
    import subprocess
    import sys

    crash = TEST_DATA / "bad" / "pillow__crash-1152ec2d.tif"
    code = (
        "import sys; from pathlib import Path; from indexer.imageio import load_image, ImageError\n"
        "for src in (Path(sys.argv[1]), Path(sys.argv[1]).read_bytes()):\n"
        "    try: load_image(src, min_side=256)\n"
        "    except ImageError as e: print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code, str(crash)], capture_output=True, text=True, check=True)
    assert out.stdout.splitlines() == ["corrupt image: OSError: decoder error -2"] * 2
    assert out.stderr == ""


def test_an_upload_over_the_decoded_size_bound_is_refused_before_decoding():
    from indexer.imageio import TOO_LARGE, decoded_bytes

    buf = io.BytesIO()
    Image.new("RGB", (300, 200)).save(buf, "PNG")
    with Image.open(io.BytesIO(buf.getvalue())) as img:
        assert decoded_bytes(img) == 300 * 200 * 4
    with pytest.raises(ImageError) as e:
        load_image(buf.getvalue(), max_bytes=300 * 200 * 4 - 1)
    assert e.value.reason == TOO_LARGE and e.value.detail.startswith("300x200 RGB pixels take")
    assert load_image(buf.getvalue(), max_bytes=300 * 200 * 4)[0].size == (300, 200)
    # A large JPEG is judged at the scale it is decoded at: 4000x3000 at 1/8 is 500x375.
    big = jpeg_bytes(Image.new("RGB", (4000, 3000), "red"))
    assert load_image(big, min_side=256, max_bytes=500 * 375 * 4)[1].width == 4000


def test_the_decoded_size_bound_counts_the_copies_made_on_the_way_to_rgb():
    from indexer.imageio import decoded_bytes

    def opened(mode: str, size: tuple[int, int], fmt: str = "PNG") -> Image.Image:
        buf = io.BytesIO()
        Image.new(mode, size).save(buf, fmt)
        return Image.open(io.BytesIO(buf.getvalue()))

    # A gray image large enough is reduced in gray (by 2000 // 256 = 7) before its RGB copy is made.
    assert decoded_bytes(opened("L", (3000, 2000)), min_side=256) == 3000 * 2000 + (3000 // 7) * (2000 // 7) * 4
    assert decoded_bytes(opened("L", (3000, 2000))) == 3000 * 2000 * 5  # no reduction asked for
    # A palette image cannot be reduced as it is: its full-size RGB copy counts.
    assert decoded_bytes(opened("P", (3000, 2000)), min_side=256) == 3000 * 2000 * 5
    # 16-bit gray: its own 2 bytes, an 8-bit copy, then the reduced RGB copy.
    assert decoded_bytes(opened("I;16", (3000, 2000)), min_side=256) == 3000 * 2000 * 3 + 428 * 285 * 4


@pytest.mark.parametrize("mode", ["L", "I;16", "F", "RGBA"])
def test_a_large_image_is_reduced_in_its_own_mode_keeping_the_shorter_side(mode):
    buf = io.BytesIO()
    Image.linear_gradient("L").resize((2000, 1500)).convert(mode).save(buf, "TIFF")
    img, info = load_image(buf.getvalue(), min_side=256)
    assert (img.mode, img.size, (info.width, info.height)) == ("RGB", (400, 300), (2000, 1500))
    pixels = np.asarray(img)
    assert pixels[0, 0, 0] < 10 and pixels[-1, 0, 0] > 245  # the gradient, scaled to 8 bits, survives
    assert load_image(buf.getvalue())[0].size == (2000, 1500)  # without min_side: full size


def test_a_camera_jpeg_with_a_second_picture_mpo_decodes_at_reduced_scale():
    """Pillow opens a JPEG carrying an MPF second picture as MPO: it was decoded at full size, and an
    upload of 24 MP or more was refused as too large."""
    buf = io.BytesIO()
    big = Image.linear_gradient("L").resize((6000, 4200)).convert("RGB")
    big.save(buf, "MPO", save_all=True, append_images=[big.resize((600, 420))])
    with Image.open(io.BytesIO(buf.getvalue())) as opened:
        assert opened.format == "MPO"
    img, info = load_image(buf.getvalue(), min_side=256, max_bytes=96 * 2**20)
    # drafted at 1/8 (750 x 525), then reduced by 2 in its own mode: the shorter side in [256, 512)
    assert img.size == (375, 263) and (info.width, info.height) == (6000, 4200)


def test_a_108_megapixel_jpeg_decodes_at_reduced_scale_and_a_bomb_is_still_one():
    buf = io.BytesIO()
    Image.new("L", (12000, 9000), 128).save(buf, "JPEG")
    img, info = load_image(buf.getvalue(), min_side=256)
    assert img.size == (375, 282) and (info.width, info.height) == (12000, 9000)  # 1/8, then reduced by 4
    with pytest.raises(ImageError) as e:  # at full size it is over the 100 megapixels allowed
        load_image(buf.getvalue())
    assert e.value.reason == "decompression bomb" and "12000x9000 pixels, over the 100 megapixels" in e.value.detail


def test_a_tiff_turned_by_its_orientation_has_its_upright_size(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6
    for fmt in ("TIFF", "JPEG"):  # Pillow turns a TIFF upright itself; a JPEG is turned by exif_transpose
        path = tmp_path / f"o6.{fmt.lower()}"
        Image.linear_gradient("L").resize((448, 640)).convert("RGB").save(path, fmt, exif=exif)
        img, info = load_image(path)
        assert img.size == (640, 448) and (info.width, info.height) == (640, 448), fmt


def test_a_float_image_with_nan_keeps_its_picture():
    a = np.tile(np.linspace(0, 1, 200, dtype=np.float32), (100, 1))
    a[0, 0], a[0, 1] = np.nan, np.inf
    buf = io.BytesIO()
    Image.fromarray(a, "F").save(buf, "TIFF")
    pixels = np.asarray(load_image(buf.getvalue())[0])[..., 0]
    assert pixels[50, 0] == 0 and pixels[50, -1] == 255 and 120 < pixels[50].mean() < 135


def test_a_jpeg_named_like_a_raw_decodes_as_the_jpeg_it_is(tmp_path):
    fake = tmp_path / "IMG_0001.CR2"  # an export renamed, or a camera's JPEG misnamed
    Image.linear_gradient("L").convert("RGB").save(fake, "JPEG")
    img, info = load_image(fake)
    assert img.size == (256, 256) and info.format == "JPEG"
