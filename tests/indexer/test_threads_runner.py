"""The default CPU layout (decode threads feeding one engine, indexer/runners/threads.py): the same
rows, vectors and failures as the process layout, crops that embed like torchvision's, a run that
resumes after an interrupt, and a run with nothing to embed that loads no model at all."""

from __future__ import annotations

import shutil
import subprocess
import sys

import numpy as np
import pytest
from sqlalchemy import select

from indexer.backbone import Backbone, _lite0_weights_file
from indexer.engines import OpenVinoEngine, TorchEngine, openvino_available
from indexer.imageio import load_image
from indexer.library import Library
from indexer.pipeline import index_folder
from indexer.runners.threads import run_threads
from indexer.schema import Embedding, ImageSignalsRow
from indexer.schema import Image as Row
from tests.conftest import REPO, SAMPLES
from tests.indexer.test_pipeline import GOOD, tree  # noqa: F401 (the messy collection fixture)


def sample_files(per_class: int = 3):
    files = [f for folder in sorted(SAMPLES.iterdir()) if folder.is_dir()
             for f in sorted(folder.glob("*.jpg"))[:per_class]]
    assert len(files) >= 20
    return files


def table(library: Library) -> dict[str, tuple]:
    """path -> (status, error, hash, width, height, format, signals, vector) of every row."""
    with library.Session() as s:
        vectors = {e.image_id: np.frombuffer(e.vector, np.float32) for e in s.scalars(select(Embedding))}
        signals = {r.image_id: (r.pdq, r.pdq_mirror, r.pdq_trim, r.quality)
                   for r in s.scalars(select(ImageSignalsRow))}
        return {r.path: (r.status, r.error, r.hash, r.width, r.height, r.format, signals.get(r.id),
                         vectors.get(r.id)) for r in s.scalars(select(Row))}


def test_crop_array_is_torchvisions_crop_to_rounding():
    pre = Backbone("efficientnet_lite0", device="cpu").preprocess
    diffs = []
    for f in sample_files(2):
        img, _ = load_image(f, min_side=pre.resize)
        ours = pre.crop_array(img)
        assert ours.shape == (pre.crop, pre.crop, 3) and ours.dtype == np.uint8
        reference = pre.crop_uint8(img).numpy().transpose(1, 2, 0)
        diffs.append(np.abs(ours.astype(int) - reference.astype(int)))
    assert max(d.max() for d in diffs) <= 8  # a few levels, on edges where the float box rounds
    assert np.mean([d.mean() for d in diffs]) < 0.2  # nearly every pixel equal


@pytest.mark.skipif(not openvino_available(), reason="openvino not installed")
def test_threads_crops_embed_like_the_torch_reference_on_real_photos():
    """OpenVINO on the decode threads' crops against PyTorch on torchvision's: cosine >= 0.999."""
    backbone = Backbone("efficientnet_lite0", device="cpu", precision="fp32")
    imgs = [load_image(f, min_side=backbone.preprocess.resize)[0] for f in sample_files()]
    reference = TorchEngine(backbone).embed_uint8(np.stack([backbone.preprocess.crop_uint8(i).numpy()
                                                            for i in imgs]))
    ours = np.ascontiguousarray(np.stack([backbone.preprocess.crop_array(i) for i in imgs]).transpose(0, 3, 1, 2))
    vectors = OpenVinoEngine(backbone).embed_uint8(ours)
    cosine = (vectors * reference).sum(axis=1)
    assert cosine.min() >= 0.999, cosine.min()


def test_threads_and_process_layouts_store_the_same_rows_vectors_and_failures(tree, tmp_path, backbone):  # noqa: F811
    tables = {}
    for name, layout in (("threads", None), ("processes", True)):
        with Library(tmp_path / name, create=True) as library:
            report = index_folder(tree, library, backbone, batch_size=3, workers=2, embed_in_workers=layout)
            assert report.indexed == len(GOOD)
            assert sum(report.failed.values()) == 3  # broken, empty, bomb: recorded, not fatal
            assert report.first_written_seconds is not None and report.write_seconds > 0
            tables[name] = table(library)
    threads, processes = tables["threads"], tables["processes"]
    assert threads.keys() == processes.keys()
    for path in threads:
        *facts, vector = threads[path]
        *their_facts, their_vector = processes[path]
        assert facts == their_facts, path
        if path in GOOD:
            assert float(vector @ their_vector) >= 0.9999, path
        else:
            assert vector is None and their_vector is None and facts[1], path


def test_threads_yield_batches_in_order_and_stop_when_the_caller_stops(tmp_path, backbone):
    from indexer.decode import PhotoTask

    files = sample_files(2)
    root = SAMPLES
    tasks = [PhotoTask(i, str(f.relative_to(root))) for i, f in enumerate(files)]
    batches = list(run_threads(root, tasks, backbone, batch_size=4, workers=2))
    assert [it.image_id for b in batches for it in b.items] == list(range(len(tasks)))
    assert all(len(b.vectors) == len(b.items) for b in batches)
    gen = run_threads(root, tasks, backbone, batch_size=4, workers=2)
    next(gen)
    gen.close()  # the decode and embed threads are shut down, not left running behind the caller


def test_an_interrupted_threads_run_is_resumed(tmp_path, backbone):
    """Ctrl+C between two batches: what was written stays, the next run embeds only the rest."""
    photos = tmp_path / "photos"
    shutil.copytree(SAMPLES / "hat", photos)
    with Library(tmp_path / "library", create=True) as library:
        import indexer.pipeline as pipeline

        real = pipeline.write_batch
        written = []

        def write_then_interrupt(*args, **kwargs):
            if written:
                raise KeyboardInterrupt
            real(*args, **kwargs)
            written.append(1)

        pipeline.write_batch = write_then_interrupt
        try:
            with pytest.raises(KeyboardInterrupt):
                index_folder(photos, library, backbone, batch_size=4, workers=2)
        finally:
            pipeline.write_batch = real
        again = index_folder(photos, library, backbone, batch_size=4, workers=2)
        assert again.indexed == len(list(photos.iterdir())) - 4 and again.unchanged == 4
        assert library.load_vectors().ntotal == len(list(photos.iterdir()))


# Indexes in a fresh interpreter, then prints which heavy modules the run imported.
INDEX_AND_REPORT = """
import sys
from lookalike.cli import main
main(sys.argv[1:], standalone_mode=False)
print("loaded:", "torch" in sys.modules, "openvino" in sys.modules)
"""


def index_in_subprocess(photos, library) -> list[str]:
    done = subprocess.run([sys.executable, "-c", INDEX_AND_REPORT, "index", str(photos), "--library", str(library),
                           "--quiet", "--device", "cpu"], capture_output=True, text=True, cwd=REPO, timeout=600)
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def test_a_run_with_nothing_to_embed_loads_no_model(tmp_path, backbone):
    photos = tmp_path / "photos"
    shutil.copytree(SAMPLES / "shoes", photos)
    with Library(tmp_path / "library", create=True) as library:
        index_folder(photos, library, backbone, workers=1)
    out = index_in_subprocess(photos, tmp_path / "library")
    assert out[:2] == ["indexed", "0,"] and out[-3:] == ["loaded:", "False", "False"]
    if openvino_available():  # a new photo is embedded by OpenVINO, still without importing torch
        shutil.copy(min((SAMPLES / "hat").glob("*.jpg")), photos / "new.jpg")
        out = index_in_subprocess(photos, tmp_path / "library")
        assert out[:2] == ["indexed", "1,"] and out[-3:] == ["loaded:", "False", "True"]


@pytest.mark.skipif(not openvino_available(), reason="openvino not installed")
def test_the_compiled_model_is_cached_per_converted_model(engine_cache, tmp_path):
    """OpenVINO's compiled blob lives in a folder named after the converted model, whose name hashes
    the weights: tuned weights never read another model's compiled graph."""
    backbone = Backbone("efficientnet_lite0", device="cpu", precision="fp32")
    engine = OpenVinoEngine(backbone)
    engine.compiled  # noqa: B018
    folder = engine.compiled_cache
    assert folder.is_relative_to(engine_cache) and folder.name == engine.model_path.stem
    assert any(folder.iterdir())  # the blob OpenVINO wrote
    tuned = tmp_path / "tuned.pt"
    shutil.copy(_lite0_weights_file(), tuned)
    with open(tuned, "ab") as f:
        f.write(b"\0")  # other bytes, so another weights identity (never loaded here)
    other = OpenVinoEngine(Backbone("efficientnet_lite0", weights=tuned, device="cpu", precision="fp32"))
    assert other.compiled_cache != folder
