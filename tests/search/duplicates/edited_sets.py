"""Libraries of real clothing_small photos beside their edited copies and look-alikes, indexed through
the real pipeline, for the copies tier's tests."""

from __future__ import annotations

import shutil
from pathlib import Path

from PIL import Image as PILImage
from sqlalchemy import select

from bench.copies import TRANSFORMS
from bench.hard_copies import HARD_TRANSFORMS
from indexer.library import Library
from indexer.pipeline import index_folder
from indexer.schema import Image
from tests.conftest import shared_corpus


def stem_of(rel: str) -> str:
    """The file stem a corpus photo gets in the library: its class and the start of its name."""
    return rel.split("/")[1] + "-" + rel.rsplit("/", 1)[1][:8]


LOOKALIKES = 3  # other photos of each garment class, shot the same way


def edited_library(base: Path, backbone, edits: dict[str, list[str]],
                   lookalikes: int = LOOKALIKES, quality: int = 92) -> tuple[Library, list[set[str]]]:
    """`edits` maps clothing_small photos (paths in the corpus) to the names of edits of them
    (bench/copies.py or bench/hard_copies.py). Each photo is saved beside its edited copies, with
    `lookalikes` other photos of each of their classes, shot the same way; all are indexed, then the
    photo folder is deleted: verification reads nothing but the stored signals. Returns the library
    and the copies groups expected (sets of file names). The edits are saved as JPEGs of `quality`."""
    corpus = shared_corpus("clothing_small")
    photos = base / "photos"
    photos.mkdir()
    expected = []
    for rel, names in edits.items():
        stem = stem_of(rel)
        img = PILImage.open(corpus / rel).convert("RGB")
        shutil.copyfile(corpus / rel, photos / f"{stem}.jpg")
        for name in names:
            edit = TRANSFORMS.get(name) or HARD_TRANSFORMS[name]
            edit(img).save(photos / f"{stem}-{name}.jpg", quality=quality)
        expected.append({f"{stem}.jpg", *(f"{stem}-{name}.jpg" for name in names)})
    chosen = {corpus / rel for rel in edits}
    for cls in sorted({rel.split("/")[1] for rel in edits}):
        others = [f for f in sorted((corpus / "train" / cls).glob("*.jpg")) if f not in chosen][:lookalikes]
        for f in others:
            shutil.copyfile(f, photos / f"other-{cls}-{f.name}")
    library = Library(base / "library", create=True)
    index_folder(photos, library, backbone, batch_size=8, workers=0)
    shutil.rmtree(photos)
    return library, expected


def group_paths(library: Library, groups) -> list[set[str]]:
    """The groups as sets of file names, in a stable order."""
    with library.Session() as s:
        by_id = dict(s.execute(select(Image.id, Image.path)).all())
    return sorted(({by_id[i] for i in g.image_ids} for g in groups), key=sorted)
