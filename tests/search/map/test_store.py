"""The map stored in a real library: a first fit, incremental placement, refits, deletions."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pytest
from sqlalchemy import delete, func, select, update

from indexer.schema import Image, MapPoint, utcnow
from search.labelling.labels import import_folders
from search.map import store as cmap


def points(library) -> dict[int, tuple[float, float]]:
    with library.Session() as s:
        return {i: (x, y) for i, x, y in s.execute(select(MapPoint.image_id, MapPoint.x, MapPoint.y))}


def test_first_run_fits_then_nothing_to_do(sample_library):
    assert cmap.pending(sample_library).refit
    report = cmap.update_map(sample_library)
    assert report.refitted and report.total == report.sample == 120
    assert report.method == "graph"
    assert len(points(sample_library)) == 120
    assert cmap.pending(sample_library).current
    again = cmap.update_map(sample_library)
    assert not again.refitted and again.placed == 0
    assert "up to date" in again.summary()


def test_new_and_reembedded_photos_are_placed_without_moving_the_rest(sample_library):
    cmap.update_map(sample_library)
    before = points(sample_library)
    ids = sorted(before)
    new, changed = ids[:10], ids[10:15]
    with sample_library.Session.begin() as s:
        s.execute(delete(MapPoint).where(MapPoint.image_id.in_(new)))  # as if just indexed
        s.execute(update(Image).where(Image.id.in_(changed)).values(indexed_at=utcnow() + timedelta(seconds=5)))
    pending = cmap.pending(sample_library)
    assert (pending.to_place, pending.refit) == (15, False)

    report = cmap.update_map(sample_library)
    assert (report.refitted, report.placed, report.total) == (False, 15, 120)
    after = points(sample_library)
    assert set(after) == set(before)
    untouched = [i for i in ids if i not in new + changed]
    assert all(after[i] == before[i] for i in untouched)
    # A photo placed by the fit it was part of lands near where the fit had put it.
    moved = np.array([np.hypot(after[i][0] - before[i][0], after[i][1] - before[i][1]) for i in new])
    assert np.median(moved) < 0.3  # the map spans 2.0
    assert cmap.pending(sample_library).current


def test_many_new_photos_mean_a_refit(sample_library):
    cmap.update_map(sample_library)
    with sample_library.Session.begin() as s:
        gone = s.scalars(select(MapPoint.image_id).limit(70)).all()
        s.execute(delete(MapPoint).where(MapPoint.image_id.in_(gone)))
    assert cmap.pending(sample_library).refit  # 70 > half of the 120 on the map at the last fit
    report = cmap.update_map(sample_library)
    assert report.refitted and report.total == 120


def test_refit_on_request_and_a_lost_fit_file(sample_library):
    cmap.update_map(sample_library)
    assert cmap.update_map(sample_library, refit=True).refitted
    (sample_library.path / cmap.FIT_FILE).unlink()
    assert cmap.pending(sample_library).refit
    assert cmap.update_map(sample_library).refitted


@pytest.mark.parametrize("damage", ["fewer components", "another dimension", "not finite"])
def test_a_fit_file_whose_arrays_do_not_fit_is_refitted(sample_library, damage):
    """A fit file that reads but whose arrays do not fit together made every later run a traceback
    (FAISS's assertion, a broadcast error, a NOT NULL failure on the points)."""
    cmap.update_map(sample_library)
    path = sample_library.path / cmap.FIT_FILE
    with np.load(path) as f:
        arrays = {k: f[k] for k in f.files}
    if damage == "fewer components":
        arrays["components"] = arrays["components"][:, :2]
    elif damage == "another dimension":
        arrays["mean"], arrays["components"] = arrays["mean"][:100], arrays["components"][:100]
    else:
        arrays["sample_xy"] = np.full_like(arrays["sample_xy"], np.nan)
    np.savez(path, **arrays)
    assert cmap.load_fit(sample_library) is None
    with sample_library.Session.begin() as s:  # a new photo to place
        s.execute(delete(MapPoint).where(MapPoint.image_id == s.scalar(select(func.min(MapPoint.image_id)))))
    report = cmap.update_map(sample_library)
    assert report.refitted and report.total == 120
    assert cmap.load_fit(sample_library) is not None


def test_deleted_photos_leave_the_map(sample_library):
    cmap.update_map(sample_library)
    with sample_library.Session.begin() as s:
        victim = s.scalar(select(Image.id).order_by(Image.id))
        s.execute(delete(Image).where(Image.id == victim))
    assert victim not in points(sample_library)
    with sample_library.Session() as s:
        assert s.scalar(select(func.count()).select_from(MapPoint)) == 119


def test_read_points_columns(sample_library):
    import_folders(sample_library)
    cmap.update_map(sample_library)
    columns = cmap.read_points(sample_library)
    assert len(columns.ids) == 120 and list(columns.ids) == sorted(columns.ids)
    assert columns.labels == sorted({"dress", "hat", "longsleeve", "outwear", "pants", "shirt", "shoes",
                                     "shorts", "skirt", "t-shirt"})
    with sample_library.Session() as s:
        folder = dict(s.execute(select(Image.id, Image.folder)).all())
    assert [columns.labels[c] for c in columns.label] == [folder[int(i)] for i in columns.ids]
    assert (columns.suggested == -1).all()  # no labeller has voted in this library yet
    assert np.abs(columns.x).max() <= 1.0 and np.abs(columns.y).max() <= 1.0


def test_one_computation_at_a_time(sample_library):
    with cmap.map_lock(sample_library), pytest.raises(cmap.MapBusy):
        cmap.update_map(sample_library)
