"""exiv2 (python-exiv2), thinly wrapped: EXIF facts of a RAW, and XMP packets read, edited and written.

exiv2 is what digiKam and darktable read and write metadata with, so what it writes they read. Its
warnings go to Python logging; while a packet is read they are caught, because a malformed packet
is not an exception in exiv2 but a warning and an empty result.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

import exiv2

from indexer.imageio import camera_name

# Where lookalike records the keywords it wrote into a sidecar (search/labelling/xmp_sidecar.py).
LOOKALIKE_NS = "https://github.com/lookalike/lookalike/xmp/1.0/"
LOOKALIKE_PREFIX = "lookalike"
exiv2.XmpProperties.registerNs(LOOKALIKE_NS, LOOKALIKE_PREFIX)

_EXIV2_LOG = logging.getLogger("exiv2")


class MetadataError(Exception):
    """A file whose metadata exiv2 cannot read or write; the message says why."""


class _Caught(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@contextmanager
def _caught_warnings() -> Iterator[_Caught]:
    caught = _Caught()
    propagate = _EXIV2_LOG.propagate
    _EXIV2_LOG.addHandler(caught)
    _EXIV2_LOG.propagate = False
    try:
        yield caught
    finally:
        _EXIV2_LOG.removeHandler(caught)
        _EXIV2_LOG.propagate = propagate


class XmpPacket:
    """An XMP packet held by exiv2: read from bytes (a sidecar) or new; edited by key; encoded."""

    def __init__(self, data: bytes | None = None) -> None:
        """Raises MetadataError for bytes that are not a well-formed XMP packet."""
        try:
            with _caught_warnings() as caught:
                if data is None:
                    self._image = exiv2.ImageFactory.create(exiv2.ImageType.xmp)
                else:
                    if not data.strip():
                        raise MetadataError("an empty file")
                    self._image = exiv2.ImageFactory.open(data)
                    if self._image.imageType() != exiv2.ImageType.xmp:
                        raise MetadataError("not an XMP packet")
                    self._image.readMetadata()
        except exiv2.Exiv2Error as e:
            raise MetadataError(_message(e)) from None
        if caught.messages:  # "XMP Toolkit error 201: Error in XMLValidator", "Failed to decode XMP metadata."
            raise MetadataError("; ".join(dict.fromkeys(caught.messages)))
        self._xmp = self._image.xmpData()

    def values(self, key: str) -> list[str]:
        """The items of an array property (or the one value of a simple one); [] when absent."""
        if key not in self._xmp:
            return []
        datum = self._xmp[key]
        return [datum.toString(i) for i in range(datum.count())]

    def set_bag(self, key: str, items: list[str]) -> None:
        """Set an unordered array (rdf:Bag) property to these items; none removes the property."""
        if key in self._xmp:
            self._xmp.erase(self._xmp.findKey(exiv2.XmpKey(key)))
        if items:
            value = exiv2.Value.create(exiv2.TypeId.xmpBag)
            for item in items:
                value.read(item)
            self._xmp[key] = value

    def keys(self) -> list[str]:
        return [datum.key() for datum in self._xmp]

    def snapshot(self) -> dict[str, str]:
        """Every property (structures and arrays item by item) as text: what another tool reads."""
        return {datum.key(): datum.toString() for datum in self._xmp}

    def encode(self) -> bytes:
        """The packet as exiv2 writes an XMP sidecar."""
        try:
            with _caught_warnings() as caught:
                self._image.writeMetadata()
        except exiv2.Exiv2Error as e:
            raise MetadataError(_message(e)) from None
        if caught.messages:
            raise MetadataError("; ".join(dict.fromkeys(caught.messages)))
        return bytes(self._image.io().data())


def embedded_xmp(path: Path) -> XmpPacket | None:
    """The XMP packet embedded in a photo file (JPEG, TIFF, DNG and other RAWs, HEIC), or None.

    Raises MetadataError when exiv2 cannot read the file."""
    try:
        with _caught_warnings():
            image = exiv2.ImageFactory.open(str(path))
            image.readMetadata()
    except exiv2.Exiv2Error as e:
        raise MetadataError(_message(e)) from None
    xmp = image.xmpData()
    if xmp.empty():
        return None
    packet = XmpPacket.__new__(XmpPacket)
    packet._image, packet._xmp = image, xmp
    return packet


def camera_facts(source: Path | bytes) -> tuple[datetime | None, str | None]:
    """Capture time and camera from a file's (or its bytes') EXIF, read by exiv2 (every RAW format
    it knows); (None, None) when it has none or cannot be read."""
    try:
        with _caught_warnings():
            image = exiv2.ImageFactory.open(str(source) if isinstance(source, Path) else source)
            image.readMetadata()
    except exiv2.Exiv2Error:
        return None, None
    exif = image.exifData()

    def text(key: str) -> str:
        return exif[key].toString().strip("\x00 ") if key in exif else ""

    taken_at = None
    for key in ("Exif.Photo.DateTimeOriginal", "Exif.Image.DateTimeOriginal", "Exif.Image.DateTime"):
        try:
            taken_at = datetime.strptime(text(key)[:19], "%Y:%m:%d %H:%M:%S")
            break
        except ValueError:
            continue
    return taken_at, camera_name(text("Exif.Image.Make"), text("Exif.Image.Model"))


def _message(e: Exception) -> str:
    """exiv2's own message: Exiv2Error's args are (code, message)."""
    args: tuple = e.args
    return str(args[1]) if len(args) > 1 else str(e)
