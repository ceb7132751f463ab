"""Which file names are photos: the extensions the scan picks up (indexer/imageio.py decodes them).

Apart from imageio so that a scan imports neither Pillow nor NumPy (the unchanged-run shortcut)."""

from __future__ import annotations

import importlib.util

EXTENSIONS = frozenset(
    {
        ".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".apng", ".webp", ".gif", ".bmp", ".tif", ".tiff",
        ".heic", ".heif", ".avif", ".mpo", ".jp2", ".j2k", ".jpx", ".pbm", ".pgm", ".ppm", ".pnm", ".psd",
    }
)

# Camera RAW formats (indexer/raw.py), scanned where their decoder (rawpy) imports: a RAW met
# without it would be recorded as failed, and a failed file is not retried until it changes.
RAW_EXTENSIONS = frozenset({".dng", ".cr2", ".cr3", ".nef", ".arw", ".raf", ".orf", ".rw2", ".pef", ".srw"})
if importlib.util.find_spec("rawpy") is not None:
    EXTENSIONS = EXTENSIONS | RAW_EXTENSIONS

# XMP sidecars beside photos (`labels export --xmp` writes them; digiKam, darktable and Lightroom
# too): expected in a photo folder, so not counted among the "ignored non-image files".
SIDECAR_EXTENSION = ".xmp"
