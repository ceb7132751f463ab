"""The synthetic library: real schema, real small JPEGs on disk, re-scanned as unchanged, extended by real photos."""

from __future__ import annotations

import shutil

from PIL import Image as PILImage
from sqlalchemy import func, select

from bench.synthetic import build
from indexer.backbone import Backbone
from indexer.library import Library
from indexer.pipeline import index_folder
from indexer.schema import INDEXED, Image, Neighbour, SuggestedLabel
from tests.conftest import SAMPLES
from web.app import create_app
from web.settings import Settings

N = 300


def test_a_synthetic_library_rescans_unchanged_takes_real_photos_and_serves_thumbnails(tmp_path):
    library_dir, photos = tmp_path / "library", tmp_path / "photos"
    timings = build(N, library_dir, photos, say=lambda _: None)
    assert timings["lists_s"] >= 0 and timings["peak_rss_mb"] > 0
    files = [p for p in photos.rglob("*.jpg") if ".templates" not in p.parts]
    assert len(files) == N
    with PILImage.open(files[0]) as im:  # a real, small JPEG
        assert im.format == "JPEG" and max(im.size) <= 160

    with Library(library_dir) as library, library.Session() as s:
        assert s.scalar(select(func.count()).select_from(Image).where(Image.status == INDEXED)) == N
        assert s.scalar(select(func.count(func.distinct(Neighbour.image_id)))) == N
        assert s.scalar(select(func.count()).select_from(SuggestedLabel)) == N

    new = photos / "real"
    new.mkdir()
    for src in sorted((SAMPLES / "hat").glob("*.jpg"))[:3]:
        shutil.copy(src, new / src.name)
    with Library(library_dir) as library:
        report = index_folder(photos, library, Backbone(device="cpu"), workers=0)
        assert (report.unchanged, report.indexed, report.removed, report.moved) == (N, 3, 0, 0)
        assert report.signals_backfilled == 0  # the synthetic rows carry duplicate signals
        with library.Session() as s:
            real = s.scalars(select(Image.id).where(Image.folder == "real")).all()

    app = create_app(Settings(library=library_dir))
    client = app.test_client()
    for image_id in (1, N, real[0]):
        response = client.get(f"/thumbs/{image_id}/small.jpg")
        assert response.status_code == 200 and response.mimetype == "image/jpeg"
        assert response.data[:2] == b"\xff\xd8"
    suggestion = client.get(f"/api/images/{real[0]}/suggestion")
    assert suggestion.status_code == 200
