"""Hard edited copies, as real collections hold them: the quarter a messaging app cropped, a meme with a
sticker and a caption, a phone photo of the photo on a screen, a screenshot with the app around it, a
collage, a copy turned 90 degrees because its EXIF orientation was lost.

Every edit is deterministic for one photo (its random choices are seeded from the photo's pixels), so
a bench run and a test see the same files.
"""

from __future__ import annotations

import random
from collections.abc import Callable

import numpy as np
from PIL import Image, ImageDraw, ImageFilter


def _rng(img: Image.Image, salt: int) -> random.Random:
    """Seeded by the photo's pixels: one photo always gets the same edit, two photos of one size not."""
    pixels = np.asarray(img.convert("L").resize((16, 16)), dtype=np.int64)
    return random.Random(int(pixels.sum()) * 7919 + int(pixels[::3, ::5].sum()) + salt)


def crop25_centre(img: Image.Image) -> Image.Image:
    """The centre quarter of the area (half of each side)."""
    w, h = img.size
    return img.crop((w // 4, h // 4, w - w // 4, h - h // 4))


def crop35_offcentre(img: Image.Image) -> Image.Image:
    """About a third of the area, away from the centre (a messaging app's square crop of a detail)."""
    w, h = img.size
    side = int(min(w, h) * 0.7)
    side_h = int(side * 0.75)
    r = _rng(img, 1)
    x, y = r.randint(0, w - side), r.randint(0, h - side_h)
    return img.crop((x, y, x + side, y + side_h))


def meme(img: Image.Image) -> Image.Image:
    """A caption banner over the top fifth and a sticker over another tenth: about a quarter hidden."""
    out = img.copy()
    w, h = out.size
    draw = ImageDraw.Draw(out)
    draw.rectangle((0, 0, w, h // 5), fill=(255, 255, 255))
    for row in range(2):
        draw.text((w // 12, h // 25 + row * h // 12), "WHEN YOU SEE IT" if row == 0 else "you can't unsee it",
                  fill=(0, 0, 0))
    r = _rng(img, 2)
    cx, cy, rad = r.randint(w // 4, 3 * w // 4), r.randint(h // 2, 4 * h // 5), min(w, h) // 6
    draw.ellipse((cx - rad, cy - rad, cx + rad, cy + rad), fill=(250, 210, 40), outline=(120, 60, 0), width=4)
    draw.ellipse((cx - rad // 3, cy - rad // 3, cx - rad // 6, cy), fill=(40, 20, 0))
    draw.ellipse((cx + rad // 6, cy - rad // 3, cx + rad // 3, cy), fill=(40, 20, 0))
    draw.arc((cx - rad // 2, cy - rad // 4, cx + rad // 2, cy + rad // 2), 20, 160, fill=(40, 20, 0), width=4)
    return out


def perspective(img: Image.Image) -> Image.Image:
    """A phone photo of the photo shown on a screen: a keystone, a dark frame around, soft and noisy."""
    w, h = img.size
    r = _rng(img, 3)
    pad = max(w, h) // 6
    canvas = Image.new("RGB", (w + 2 * pad, h + 2 * pad), (25, 25, 30))
    canvas.paste(img, (pad, pad))
    k = 0.10
    # Corners of the shown photo, moved inwards unevenly: the quad the camera saw.
    quad = [
        (pad + r.uniform(0, k) * w, pad + r.uniform(0, k) * h),
        (pad + r.uniform(0, k) * w, pad + h - r.uniform(0, k) * h),
        (pad + w - r.uniform(0, k / 3) * w, pad + h - r.uniform(0, k / 3) * h),
        (pad + w - r.uniform(0, k / 3) * w, pad + r.uniform(0, k / 3) * h),
    ]
    src = [(pad, pad), (pad, pad + h), (pad + w, pad + h), (pad + w, pad)]
    coeffs = _perspective_coeffs(quad, src)
    shot = canvas.transform(canvas.size, Image.Transform.PERSPECTIVE, coeffs, Image.Resampling.BICUBIC,
                            fillcolor=(25, 25, 30))
    shot = shot.filter(ImageFilter.GaussianBlur(1.0))
    noise = np.random.default_rng(w * h).normal(0, 6, (shot.size[1], shot.size[0], 3))
    pixels = np.clip(np.asarray(shot, np.float32) * 0.9 + 12 + noise, 0, 255).astype(np.uint8)
    return Image.fromarray(pixels)


def _perspective_coeffs(dst: list[tuple[float, float]], src: list[tuple[float, float]]) -> list[float]:
    """PIL's 8 coefficients mapping output points `dst` back to input points `src`."""
    rows, rhs = [], []
    for (x, y), (u, v) in zip(dst, src, strict=True):
        rows.append([x, y, 1, 0, 0, 0, -u * x, -u * y])
        rows.append([0, 0, 0, x, y, 1, -v * x, -v * y])
        rhs += [u, v]
    return np.linalg.solve(np.array(rows, float), np.array(rhs, float)).tolist()


def screenshot(img: Image.Image) -> Image.Image:
    """The photo inside a phone app's screen: status bar, title bar, text and buttons around it."""
    w, h = img.size
    width = int(w * 1.25)
    shown = img.resize((int(w * 1.1), int(h * 1.1)), Image.Resampling.BICUBIC)
    top, below = h // 5, h // 3
    out = Image.new("RGB", (width, top + shown.size[1] + below), (245, 245, 248))
    draw = ImageDraw.Draw(out)
    draw.rectangle((0, 0, width, top // 3), fill=(20, 20, 20))
    draw.text((8, 2), "12:41", fill=(255, 255, 255))
    draw.text((width - 60, 2), "87% 4G", fill=(255, 255, 255))
    draw.rectangle((0, top // 3, width, top), fill=(60, 90, 200))
    draw.text((40, top // 2), "Holiday album  >  Photo 14 of 52", fill=(255, 255, 255))
    x0 = (width - shown.size[0]) // 2
    out.paste(shown, (x0, top))
    y = top + shown.size[1] + 10
    for i in range(4):
        draw.text((16, y + i * 18), ["Liked by anna and 31 others", "Nice shot!!", "where is this?",
                                     "View all 12 comments"][i], fill=(30, 30, 30))
    for i in range(4):
        draw.ellipse((16 + i * width // 4, out.size[1] - 40, 44 + i * width // 4, out.size[1] - 12),
                     outline=(90, 90, 90), width=2)
    return out


def embedded(img: Image.Image) -> Image.Image:
    """The photo pasted, at about 60 % of its size, into a larger striped poster."""
    w, h = img.size
    canvas_w, canvas_h = int(w * 1.3), int(h * 1.2)
    out = Image.new("RGB", (canvas_w, canvas_h), (200, 180, 150))
    draw = ImageDraw.Draw(out)
    for x in range(0, canvas_w, 24):
        draw.line((x, 0, x + canvas_h // 2, canvas_h), fill=(170, 120, 90), width=6)
    shown = img.resize((int(w * 0.8), int(h * 0.8)), Image.Resampling.LANCZOS)
    r = _rng(img, 4)
    out.paste(shown, (r.randint(0, canvas_w - shown.size[0]), r.randint(0, canvas_h - shown.size[1])))
    draw.text((10, 10), "SUMMER SALE", fill=(40, 0, 0))
    return out


def rotate90(img: Image.Image) -> Image.Image:
    return img.transpose(Image.Transpose.ROTATE_90)


def rotate270_crop(img: Image.Image) -> Image.Image:
    """Turned the other way, and a little cropped (an edit after the turn)."""
    w, h = img.size
    return img.crop((w // 16, h // 16, w - w // 16, h - h // 16)).transpose(Image.Transpose.ROTATE_270)


def crop25_mirror(img: Image.Image) -> Image.Image:
    """A quarter-area corner crop, mirrored (a reposted detail)."""
    w, h = img.size
    return img.crop((w // 2, h // 2, w, h)).transpose(Image.Transpose.FLIP_LEFT_RIGHT)


def stickers(img: Image.Image) -> Image.Image:
    """Several opaque stickers and a text box scattered over the photo: about 30 % hidden."""
    out = img.copy()
    w, h = out.size
    draw = ImageDraw.Draw(out)
    r = _rng(img, 5)
    colours = [(230, 40, 90), (30, 180, 220), (250, 200, 20), (120, 220, 80)]
    for i in range(4):
        side = min(w, h) // 4
        x, y = r.randint(0, w - side), r.randint(0, h - side)
        draw.rounded_rectangle((x, y, x + side, y + side), radius=side // 4, fill=colours[i])
        draw.text((x + side // 5, y + side // 3), "WOW", fill=(255, 255, 255))
    draw.rectangle((0, h - h // 9, w, h), fill=(0, 0, 0))
    draw.text((10, h - h // 12), "@someone_reposted", fill=(255, 255, 255))
    return out


HARD_TRANSFORMS: dict[str, Callable[[Image.Image], Image.Image]] = {
    "crop25_centre": crop25_centre,
    "crop35_offcentre": crop35_offcentre,
    "crop25_mirror": crop25_mirror,
    "meme": meme,
    "stickers": stickers,
    "perspective": perspective,
    "screenshot": screenshot,
    "embedded": embedded,
    "rotate90": rotate90,
    "rotate270_crop": rotate270_crop,
}
