"""Camera RAW files, made for real (pidng DNGs): indexed with their camera facts, upright, from the
embedded preview when it is large enough, else a half-size demosaic; a bad RAW is recorded with a reason."""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image as PILImage
from sqlalchemy import delete, select

from indexer.hashes import backfill_signals, missing_signals
from indexer.imageio import EXTENSIONS, ImageError, load_image
from indexer.library import Library
from indexer.pipeline import index_folder
from indexer.raw import PREVIEW_MIN_LONG_SIDE
from indexer.scan import scan
from indexer.schema import FAILED, INDEXED, Image, ImageSignalsRow
from tests.conftest import SAMPLES
from tests.raw_photos import make_raw_shoot, write_dng


@pytest.fixture(scope="module")
def shoot(tmp_path_factory, backbone):
    base = tmp_path_factory.mktemp("raw")
    roles = make_raw_shoot(base / "photos", SAMPLES)
    library = Library(base / "library", create=True)
    index_folder(base / "photos", library, backbone, batch_size=4, workers=0)
    yield base / "photos", library, roles
    library.close()


def rows_by_path(library) -> dict[str, Image]:
    with library.Session() as s:
        return {r.path: r for r in s.scalars(select(Image))}


def picture() -> PILImage.Image:
    return PILImage.open(sorted(SAMPLES.rglob("*.jpg"))[7]).convert("RGB")


def likeness(a: PILImage.Image, b: PILImage.Image) -> float:
    """Pearson correlation of two pictures' gray pixels at one small size."""
    x, y = (np.asarray(i.convert("L").resize((48, 64)), dtype=np.float64).ravel() for i in (a, b))
    return float(np.corrcoef(x, y)[0, 1])


def test_every_raw_extension_is_scanned(tmp_path):
    for ext in (".dng", ".cr2", ".CR3", ".nef", ".arw", ".raf", ".orf", ".rw2", ".pef", ".srw"):
        (tmp_path / f"shot{ext}").write_bytes(b"x")
        assert ext.lower() in EXTENSIONS
    assert sorted(f.path for f in scan(tmp_path).files) == sorted(p.name for p in tmp_path.iterdir())


def test_raw_files_are_indexed_with_their_camera_facts(shoot):
    _, library, roles = shoot
    rows = rows_by_path(library)
    for role in ("pair_raw", "graded_raw", "turned", "previewed"):
        row = rows[roles[role]]
        assert row.status == INDEXED, (role, row.error)
        assert row.format == "DNG" and row.hash
    pair = rows[roles["pair_raw"]]
    assert (pair.camera, pair.taken_at.isoformat()) == ("Canon EOS 5D", "2024-05-06T07:08:09")
    turned = rows[roles["turned"]]
    assert turned.camera == "NIKON CORPORATION NIKON D750"
    assert turned.taken_at.isoformat() == "2023-12-24T18:30:00"
    assert turned.height > turned.width  # stored landscape, tagged to stand upright
    with library.Session() as s:
        hashed = set(s.scalars(select(ImageSignalsRow.image_id)))
    assert {rows[roles[r]].id for r in ("pair_raw", "turned", "previewed")} <= hashed


def test_a_bad_raw_is_recorded_with_its_reason_and_the_rest_go_on(shoot):
    _, library, roles = shoot
    rows = rows_by_path(library)
    broken, cut = rows[roles["broken"]], rows[roles["cut"]]
    assert broken.status == FAILED and broken.error.startswith("unsupported RAW: LibRaw cannot read this file")
    assert cut.status == FAILED and cut.error.startswith("corrupt RAW: ")
    assert sum(r.status == INDEXED for r in rows.values()) == len(rows) - 2


def test_a_small_raw_is_demosaiced_at_half_size_in_its_colours(tmp_path):
    pic = picture()
    img, info = load_image(write_dng(tmp_path / "a.dng", pic))
    assert (info.width, info.height) == pic.size
    assert img.size == (pic.width // 2, pic.height // 2)
    assert likeness(img, pic) > 0.95
    # The camera's white balance, in sRGB: the balance of the channels is the picture's (LibRaw's
    # auto-brightness, as any RAW developer's default, makes it a little brighter).
    got, want = (np.asarray(i, dtype=np.float64).mean(axis=(0, 1)) for i in (img, pic))
    assert np.allclose(got / got.sum(), want / want.sum(), atol=0.01)


def test_a_large_embedded_preview_stands_for_the_raw(tmp_path):
    pic = picture()
    # The preview is a different picture, so the test sees which pixels were used.
    other = PILImage.open(sorted(SAMPLES.rglob("*.jpg"))[50]).convert("RGB").resize((768, 1024))
    img, info = load_image(write_dng(tmp_path / "big.dng", pic, preview=other))
    assert img.size == (768, 1024) and (info.width, info.height) == pic.size
    assert likeness(img, other) > 0.95
    # A preview too small to stand for the photo (a 160 px thumbnail): demosaiced instead.
    small = other.resize((120, 160))
    assert max(small.size) < PREVIEW_MIN_LONG_SIDE
    img, _ = load_image(write_dng(tmp_path / "small.dng", pic, preview=small))
    assert img.size == (pic.width // 2, pic.height // 2) and likeness(img, pic) > 0.95


@pytest.mark.parametrize("preview", [False, True])
def test_orientation_comes_from_the_raw(tmp_path, preview):
    upright = picture()
    stored = upright.transpose(PILImage.Transpose.ROTATE_90)  # landscape, as the sensor saw it
    embedded = stored.resize((1024, 1024 * stored.height // stored.width)) if preview else None
    img, info = load_image(write_dng(tmp_path / "turned.dng", stored, orientation=6, preview=embedded))
    assert (info.width, info.height) == upright.size
    assert img.height > img.width
    assert likeness(img, upright) > 0.95


@pytest.mark.parametrize("preview", [False, True])
@pytest.mark.parametrize("orientation", [5, 7])  # mirrored and turned: a front camera's DNG
def test_a_mirrored_orientation_turns_the_dimensions_too(tmp_path, orientation, preview):
    upright = picture()
    mirror = {5: PILImage.Transpose.TRANSPOSE, 7: PILImage.Transpose.TRANSVERSE}[orientation]
    stored = upright.transpose(mirror)  # landscape, as the sensor saw it (each is its own inverse)
    embedded = stored.resize((1024, 1024 * stored.height // stored.width)) if preview else None
    img, info = load_image(write_dng(tmp_path / "mirrored.dng", stored, orientation=orientation, preview=embedded))
    assert likeness(img, upright) > 0.95
    assert (info.width, info.height) == upright.size


def test_raw_loading_errors_have_reasons(tmp_path):
    empty = tmp_path / "empty.arw"
    empty.write_bytes(b"")
    with pytest.raises(ImageError, match="^empty file"):
        load_image(empty)
    with pytest.raises(ImageError, match="^missing file"):
        load_image(tmp_path / "gone.cr2")
    big = write_dng(tmp_path / "big.dng", picture())
    with pytest.raises(ImageError, match="^too large to decode"):
        load_image(big, max_bytes=1000)


def test_a_demosaic_counts_libraws_buffers_against_the_memory_bound(tmp_path):
    """Without a preview a RAW is demosaiced at half size; LibRaw holds the whole sensor's data and
    a 16-bit working image besides the RGB it returns, so the bound counts them too: a file whose
    RGB alone fits, and whose whole decoding does not, is refused."""
    stored = picture()
    path = write_dng(tmp_path / "no-preview.dng", stored)  # no preview: the demosaic path
    w, h = stored.size
    rgb_only = (w // 2) * (h // 2) * 4
    whole = w * h * 2 + (w // 2) * (h // 2) * 15
    with pytest.raises(ImageError, match="^too large to decode"):
        load_image(path, max_bytes=2 * rgb_only)
    img, _ = load_image(path, max_bytes=whole)
    assert img.size == (w // 2, h // 2)


def test_signal_backfill_reads_raw_files(shoot):
    photos, library, roles = shoot
    with library.Session.begin() as s:
        s.execute(delete(ImageSignalsRow))
    assert backfill_signals(library, photos) == sum(r.status == INDEXED for r in rows_by_path(library).values())
    assert missing_signals(library) == []


def test_search_by_a_raw_file_from_outside_the_library(shoot, tmp_path):
    from click.testing import CliRunner

    from lookalike.cli import main

    photos, library, roles = shoot
    query = write_dng(tmp_path / "query.dng", PILImage.open(photos / roles["alone"]))
    result = CliRunner().invoke(main, ["search", str(query), "-k", "1", "--json", "--library", str(library.path)])
    assert result.exit_code == 0, result.output
    assert f'"path": "{roles["alone"]}"' in result.output


FORKED_DEMOSAIC = """
import multiprocessing, sys, warnings
from pathlib import Path
import torch
from indexer.imageio import load_image

warnings.simplefilter("error")  # rawpy's fork warning too: it must be answered, not printed
raw = Path(sys.argv[1])
torch.ones(512, 512) @ torch.ones(512, 512)  # torch's OpenMP pool, in the parent
load_image(raw)  # and LibRaw's demosaic, in the parent


def child(queue):
    queue.put(load_image(raw)[0].size)


if __name__ == "__main__":
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    process = context.Process(target=child, args=(queue,))
    process.start()
    try:
        print("child decoded", queue.get(timeout=120))
    finally:
        process.kill()
"""


def test_a_forked_process_demosaics_after_its_parent_did(tmp_path):
    """GNU OpenMP is not fork-safe: without LibRaw on one thread in the child this hangs (seen)."""
    import subprocess
    import sys

    from tests.conftest import REPO

    raw = write_dng(tmp_path / "a.dng", picture())
    script = tmp_path / "forked.py"
    script.write_text(FORKED_DEMOSAIC)
    done = subprocess.run([sys.executable, str(script), str(raw)], capture_output=True, text=True, timeout=300,
                          cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"child decoded {(picture().width // 2, picture().height // 2)}\n"


def test_raw_bytes_are_decoded_and_other_bytes_are_still_not_an_image(tmp_path):
    pic = picture()
    data = write_dng(tmp_path / "a.dng", pic).read_bytes()
    img, info = load_image(data)
    assert (info.width, info.height, info.format, info.camera) == (*pic.size, "RAW", "Canon EOS 5D")
    assert likeness(img, pic) > 0.95
    with pytest.raises(ImageError, match="^not an image: cannot identify image file <4000 bytes>"):
        load_image(b"not a photo" * 363 + b"xxxxxxx")
    with pytest.raises(ImageError, match="^corrupt RAW: "):
        load_image(data[: len(data) // 50])
