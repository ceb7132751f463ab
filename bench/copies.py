"""Edited copies of a photo, as people make them: re-encoded, resized, cropped, mirrored, captioned."""

from __future__ import annotations

import io
from collections.abc import Callable

from PIL import Image, ImageDraw, ImageEnhance, ImageFilter


def _jpeg(img: Image.Image, quality: int) -> Image.Image:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def jpeg_q15(img: Image.Image) -> Image.Image:
    return _jpeg(img, 15)


def grayscale(img: Image.Image) -> Image.Image:
    return img.convert("L")


def squash(img: Image.Image) -> Image.Image:
    side = min(img.size)
    return img.resize((side, side), Image.Resampling.BICUBIC)


def thumb96(img: Image.Image) -> Image.Image:
    out = img.copy()
    out.thumbnail((96, 96), Image.Resampling.LANCZOS)
    return out


def crop80_centre(img: Image.Image) -> Image.Image:
    w, h = img.size
    return img.crop((w // 10, h // 10, w - w // 10, h - h // 10))


def crop70_corner(img: Image.Image) -> Image.Image:
    w, h = img.size
    return img.crop((0, 0, w * 7 // 10, h * 7 // 10))


def rotate4(img: Image.Image) -> Image.Image:
    return img.rotate(4, Image.Resampling.BICUBIC, expand=False, fillcolor=(0, 0, 0))


def caption(img: Image.Image) -> Image.Image:
    w, h = img.size
    bar = max(24, h // 8)
    out = Image.new("RGB", (w, h + bar), (0, 0, 0))
    out.paste(img, (0, 0))
    ImageDraw.Draw(out).text((8, h + bar // 3), "Look at this! #holiday 2024", fill=(255, 255, 255))
    return out


def letterbox(img: Image.Image) -> Image.Image:
    w, h = img.size
    width = max(w, h * 16 // 9)
    out = Image.new("RGB", (width, h), (0, 0, 0))
    out.paste(img, ((width - w) // 2, 0))
    return out


def brightness_contrast(img: Image.Image) -> Image.Image:
    return ImageEnhance.Contrast(ImageEnhance.Brightness(img).enhance(1.3)).enhance(0.8)


def mirror(img: Image.Image) -> Image.Image:
    return img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)


def webp_half(img: Image.Image) -> Image.Image:
    """What a messaging app sends: half the size, lossy WebP."""
    small = img.resize((img.width // 2, img.height // 2), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    small.save(buf, "WEBP", quality=50)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def blur(img: Image.Image) -> Image.Image:
    return img.filter(ImageFilter.GaussianBlur(2))


def watermark(img: Image.Image) -> Image.Image:
    out = img.copy()
    draw = ImageDraw.Draw(out)
    w, h = out.size
    for y in range(h // 6, h, h // 3):
        draw.text((w // 8, y), "(c) lookalike stock photos", fill=(255, 255, 255))
    draw.rectangle((w - w // 5, h - h // 10, w - 4, h - 4), fill=(200, 30, 30))
    return out


def mirror_crop90(img: Image.Image) -> Image.Image:
    w, h = img.size
    return mirror(img.crop((w // 20, h // 20, w - w // 20, h - h // 20)))


def palette32(img: Image.Image) -> Image.Image:
    return img.quantize(32).convert("RGB")


TRANSFORMS: dict[str, Callable[[Image.Image], Image.Image]] = {
    "jpeg_q15": jpeg_q15,
    "grayscale": grayscale,
    "squash": squash,
    "thumb96": thumb96,
    "crop80_centre": crop80_centre,
    "crop70_corner": crop70_corner,
    "rotate4": rotate4,
    "caption": caption,
    "letterbox": letterbox,
    "brightness_contrast": brightness_contrast,
    "mirror": mirror,
    "webp_half": webp_half,
    "blur": blur,
    "watermark": watermark,
    "mirror_crop90": mirror_crop90,
    "palette32": palette32,
}
