"""Writing test photos with an EXIF capture time and camera, as a phone's burst leaves them."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from PIL import Image

_MAKE, _MODEL, _EXIF_IFD, _DATETIME_ORIGINAL = 0x010F, 0x0110, 0x8769, 0x9003


def save_shot(img: Image.Image, path: Path, taken: datetime | None, camera: tuple[str, str] | None = None) -> None:
    """Save as JPEG with DateTimeOriginal `taken` and Make/Model `camera` (either may be None)."""
    exif = Image.Exif()
    if camera is not None:
        exif[_MAKE], exif[_MODEL] = camera
    if taken is not None:
        exif.get_ifd(_EXIF_IFD)[_DATETIME_ORIGINAL] = taken.strftime("%Y:%m:%d %H:%M:%S")
    path.parent.mkdir(parents=True, exist_ok=True)
    img.convert("RGB").save(path, "JPEG", quality=92, exif=exif.tobytes())
