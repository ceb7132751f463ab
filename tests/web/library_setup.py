"""Building blocks of the web tests: labelled libraries, apps, photos to upload."""

from __future__ import annotations

import io
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from PIL import Image as PILImage
from sqlalchemy import select
from werkzeug.serving import make_server

from indexer.schema import INDEXED, Image, Label
from search.labelling.labels import set_label
from search.searcher import Searcher
from web import create_app
from web.settings import Settings

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "tests" / "artifacts"


def label_every_other(library) -> dict[int, str]:
    """Every other photo of each sample folder gets its folder name (as `lookalike up` does)."""
    labelled: dict[int, str] = {}
    with library.Session.begin() as s:
        seen: dict[str, int] = {}
        rows = s.execute(
            select(Image.id, Image.folder).where(Image.status == INDEXED).order_by(Image.folder, Image.path)
        )
        for image_id, folder in rows:
            i = seen[folder] = seen.get(folder, -1) + 1
            if i % 2 == 0:
                set_label(s, image_id, folder, source="imported")
                labelled[image_id] = folder
    return labelled


def make_app(library, backbone, **settings):
    settings = Settings(library=library.path, **settings)
    app = create_app(settings, searcher=Searcher(library, backbone=backbone))
    app.config["TESTING"] = True
    app.config["DUPLICATES_WAIT"] = 600  # the duplicates answer at once, as on any small library
    app.config["LABEL_CHECK_WAIT"] = 600  # and so does the label check
    return app


def stored_label(library, image_id: int) -> str | None:
    with library.Session() as s:
        row = s.get(Label, image_id)
        return row.label if row else None


def jpeg_bytes(img: PILImage.Image, quality: int = 85) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def near_duplicate_of(path: Path) -> bytes:
    """A resized, recompressed copy of a photo: what a messaging app makes of it."""
    with PILImage.open(path) as img:
        img = img.convert("RGB")
        small = img.resize((img.width * 4 // 5, img.height * 4 // 5), PILImage.LANCZOS)
    return jpeg_bytes(small, quality=70)


def make_small_collection(folder: Path, samples: Path, bad: Path) -> dict[str, str]:
    """Six photos of each sample class, a resized copy and a recompressed copy of two of them,
    and one truncated JPEG. Returns {copy path: original path}, relative to `folder`."""
    for cls in sorted(p for p in samples.iterdir() if p.is_dir()):
        (folder / cls.name).mkdir(parents=True)
        for photo in sorted(cls.glob("*.jpg"))[:6]:
            (folder / cls.name / photo.name).write_bytes(photo.read_bytes())
    copies = {}
    for cls, name in (("dress", "copy-resized.jpg"), ("hat", "copy-recompressed.jpg")):
        original = sorted((folder / cls).glob("*.jpg"))[0]
        (folder / cls / name).write_bytes(near_duplicate_of(original))
        copies[f"{cls}/{name}"] = f"{cls}/{original.name}"
    (folder / "broken").mkdir()
    (folder / "broken" / "truncated.jpg").write_bytes((bad / "pillow__truncated_jpeg.jpg").read_bytes())
    return copies


@contextmanager
def serving(app) -> Iterator[str]:
    """The app on a real threaded server at 127.0.0.1, on a free port: its URL while the block runs."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()  # make_server has bound the socket already: no waiting needed
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(timeout=10)
