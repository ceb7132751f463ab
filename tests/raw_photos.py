"""Real camera RAW files for tests: DNGs written by pidng from an RGB picture's Bayer mosaic."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

# XYZ (D65) -> linear sRGB: the DNG's ColorMatrix1 when the "sensor" sees linear sRGB.
_XYZ_TO_SRGB = [[3.2406, -1.5372, -0.4986], [-0.9689, 1.8758, 0.0415], [0.0557, -0.2040, 1.0570]]
BITS = 12


def write_dng(path: Path, picture: Image.Image, *, orientation: int = 1, make: str = "Canon",
              model: str = "Canon EOS 5D", taken: str = "2024:05:06 07:08:09",
              preview: Image.Image | None = None) -> Path:
    """Write `picture` as an uncompressed 12-bit RGGB DNG at `path` (which must end in .dng), with
    `preview` embedded as its JPEG preview (written by exiv2, as a camera's IFD1 JPEG)."""
    from pidng.core import RAW2DNG, DNGTags, Tag
    from pidng.defs import CalibrationIlluminant, CFAPattern, DNGVersion, PhotometricInterpretation

    srgb = np.asarray(picture.convert("RGB"), dtype=np.float64) / 255.0
    linear = np.where(srgb <= 0.04045, srgb / 12.92, ((srgb + 0.055) / 1.055) ** 2.4)
    top = (1 << BITS) - 1
    h, w = linear.shape[:2]
    mosaic = np.empty((h, w), dtype=np.uint16)
    mosaic[0::2, 0::2] = linear[0::2, 0::2, 0] * top
    mosaic[0::2, 1::2] = linear[0::2, 1::2, 1] * top
    mosaic[1::2, 0::2] = linear[1::2, 0::2, 1] * top
    mosaic[1::2, 1::2] = linear[1::2, 1::2, 2] * top
    tags = DNGTags()
    for tag, value in [
        (Tag.ImageWidth, w), (Tag.ImageLength, h), (Tag.TileWidth, w), (Tag.TileLength, h),
        (Tag.Orientation, orientation), (Tag.SamplesPerPixel, 1), (Tag.BitsPerSample, BITS),
        (Tag.PhotometricInterpretation, PhotometricInterpretation.Color_Filter_Array),
        (Tag.CFARepeatPatternDim, [2, 2]), (Tag.CFAPattern, CFAPattern.RGGB),
        (Tag.BlackLevel, 0), (Tag.WhiteLevel, top),
        (Tag.ColorMatrix1, [[round(v * 10000), 10000] for row in _XYZ_TO_SRGB for v in row]),
        (Tag.CalibrationIlluminant1, CalibrationIlluminant.D65),
        (Tag.AsShotNeutral, [[1, 1], [1, 1], [1, 1]]), (Tag.BaselineExposure, [[0, 1]]),
        (Tag.Make, make), (Tag.Model, model), (Tag.DateTime, taken), (Tag.DateTimeOriginal, taken),
        (Tag.DNGVersion, DNGVersion.V1_4), (Tag.DNGBackwardVersion, DNGVersion.V1_2),
    ]:
        tags.set(tag, value)
    path = Path(path)
    assert path.suffix == ".dng", "pidng names the file itself: give a .dng path"
    writer = RAW2DNG()
    writer.options(tags, path="", compress=False)
    writer.convert(mosaic, filename=str(path.with_suffix("")))
    if preview is not None:
        import exiv2

        jpeg = io.BytesIO()
        preview.convert("RGB").save(jpeg, "JPEG", quality=90)
        image = exiv2.ImageFactory.open(str(path))
        image.readMetadata()
        exiv2.ExifThumb(image.exifData()).setJpegThumbnail(jpeg.getvalue())
        image.writeMetadata()
    return path


def camera_jpeg(picture: Image.Image, path: Path) -> Path:
    """What a camera writes beside its RAW: the same shot, developed its own way (brighter, sharper)."""
    from PIL import ImageEnhance, ImageFilter

    developed = ImageEnhance.Brightness(picture.convert("RGB")).enhance(1.1).filter(ImageFilter.SHARPEN)
    developed.save(path, "JPEG", quality=90)
    return path


def make_raw_shoot(folder: Path, samples: Path) -> dict[str, str]:
    """A photographer's folder of real RAW files: RAW+JPEG pairs, a RAW alone turned by its
    orientation tag, a RAW with a large embedded preview, photos of the same name elsewhere, and
    two bad RAW files. Returns {role: relative path}."""
    pictures = [Image.open(p).convert("RGB") for p in sorted(samples.rglob("*.jpg"))[::12][:6]]
    shots, other, bad = folder / "shots", folder / "other", folder / "bad"
    for d in (shots, other, bad):
        d.mkdir(parents=True)
    write_dng(shots / "IMG_0001.dng", pictures[0])
    camera_jpeg(pictures[0], shots / "IMG_0001.JPG")
    # The camera JPEG of IMG_0003 is cropped and graded: its pixels alone would not pair it.
    write_dng(shots / "IMG_0003.dng", pictures[1])
    w, h = pictures[1].size
    camera_jpeg(pictures[1].crop((w // 3, h // 3, w, h)).convert("L").convert("RGB"), shots / "IMG_0003.jpg")
    # Stored as the sensor saw it (landscape), tagged "turn 90 degrees clockwise" to stand upright.
    write_dng(shots / "IMG_0002.dng", pictures[2].transpose(Image.Transpose.ROTATE_90), orientation=6,
              make="NIKON CORPORATION", model="NIKON D750", taken="2023:12:24 18:30:00")
    w, h = pictures[3].size
    write_dng(shots / "IMG_0004.dng", pictures[3], preview=pictures[3].resize((1024 * w // h, 1024)))
    pictures[4].save(other / "IMG_0001.jpg", quality=90)  # same name, another folder: another shot
    pictures[5].save(shots / "holiday.jpg", quality=90)
    (bad / "broken.cr2").write_bytes(b"II*\x00" + bytes(range(256)) * 40)
    cut = (shots / "IMG_0001.dng").read_bytes()
    (bad / "cut.nef").write_bytes(cut[: len(cut) // 50])
    return {
        "pair_raw": "shots/IMG_0001.dng", "pair_jpeg": "shots/IMG_0001.JPG",
        "graded_raw": "shots/IMG_0003.dng", "graded_jpeg": "shots/IMG_0003.jpg",
        "turned": "shots/IMG_0002.dng", "previewed": "shots/IMG_0004.dng",
        "namesake": "other/IMG_0001.jpg", "alone": "shots/holiday.jpg",
        "broken": "bad/broken.cr2", "cut": "bad/cut.nef",
    }
