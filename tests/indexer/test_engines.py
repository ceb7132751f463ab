"""Inference engines: PyTorch and OpenVINO give the same vectors on real photos; the choice, the
cache of converted models, the fallback without OpenVINO and the CLI option."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from indexer.backbone import Backbone
from indexer.engines import EngineError, OpenVinoEngine, TorchEngine, choose_engine, describe, make_engine
from indexer.imageio import load_image
from indexer.library import Library
from indexer.pipeline import index_folder
from lookalike.cli import main
from tests.conftest import REPO, SAMPLES

# Python that runs the CLI with OpenVINO made unimportable, as on a machine without it.
WITHOUT_OPENVINO = "import sys; sys.modules['openvino'] = None; from lookalike.cli import main; main()"


@pytest.fixture(scope="module")
def fp32_backbone() -> Backbone:
    b = Backbone("efficientnet_lite0", device="cpu", precision="fp32")
    assert b.model is not None
    return b


def sample_crops(backbone: Backbone, per_class: int = 3) -> torch.Tensor:
    files = [f for folder in sorted(SAMPLES.iterdir()) if folder.is_dir()
             for f in sorted(folder.glob("*.jpg"))[:per_class]]
    assert len(files) >= 20
    crops = []
    for f in files:
        img, _ = load_image(f.read_bytes(), min_side=backbone.preprocess.resize)
        crops.append(backbone.preprocess.crop_uint8(img))
    return torch.stack(crops)


def test_openvino_and_torch_give_the_same_vectors_on_real_photos(fp32_backbone):
    crops = sample_crops(fp32_backbone)
    reference = TorchEngine(fp32_backbone).embed_uint8(crops)
    for threads in (1, 2):  # one stream, and a batch split over two streams
        vectors = OpenVinoEngine(fp32_backbone, threads=threads).embed_uint8(crops)
        assert vectors.shape == reference.shape and vectors.dtype == np.float32
        assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
        cosine = (vectors * reference).sum(axis=1)
        assert cosine.min() >= 0.999, cosine.min()
    # Different photos stay different: the agreement is not a constant output.
    assert (reference @ reference.T)[np.triu_indices(len(reference), 1)].min() < 0.9


def test_openvino_engine_serves_many_threads_at_once(fp32_backbone):
    """The web embeds uploads on several threads (and warms up on another) with one engine."""
    from concurrent.futures import ThreadPoolExecutor

    crops = sample_crops(fp32_backbone)
    engine = OpenVinoEngine(fp32_backbone, threads=2)
    alone = engine.embed_uint8(crops)
    with ThreadPoolExecutor(6) as pool:
        together = list(pool.map(lambda i: engine.embed_uint8(crops[i % len(crops):][:3]), range(24)))
    for i, vectors in enumerate(together):
        assert np.allclose(vectors, alone[i % len(crops):][:3], atol=1e-5)


def test_converted_model_is_cached_by_backbone_weights_version_and_precision(fp32_backbone, engine_cache):
    engine = OpenVinoEngine(fp32_backbone)
    engine.prepare()
    path = engine.model_path
    assert path.is_file() and path.with_suffix(".bin").is_file()
    assert path.is_relative_to(engine_cache)  # LOOKALIKE_CACHE is honoured
    stamp = path.stat().st_mtime_ns
    again = OpenVinoEngine(fp32_backbone)
    again.prepare()
    assert again.model_path == path and path.stat().st_mtime_ns == stamp  # read, not converted again
    assert not list(path.parent.glob(".convert-*"))  # no half-written conversion left behind
    bf16 = Backbone("efficientnet_lite0", device="cpu", precision="bf16")
    assert OpenVinoEngine(bf16).model_path != path
    assert fp32_backbone.weights_identity.split(":")[-1] not in path.name  # the key is hashed...
    assert engine.version in path.name and "fp32" in path.name  # ...readably labelled


def test_choice_follows_device_precision_and_what_is_installed():
    assert choose_engine("auto", "cpu", "fp32").name == "openvino"
    assert choose_engine("auto", "cuda", "bf16").name == "torch"
    assert choose_engine("torch", "cpu", "fp32").name == "torch"
    fp16 = choose_engine("auto", "cpu", "fp16")
    assert fp16.name == "torch" and "fp16" in fp16.note
    with pytest.raises(EngineError, match="runs on the CPU"):
        choose_engine("openvino", "cuda", "bf16")
    with pytest.raises(EngineError, match="unknown engine"):
        choose_engine("tensorrt", "cpu", "fp32")


def test_describe_names_engine_and_precision(fp32_backbone):
    assert describe(make_engine(fp32_backbone, "openvino")) == "openvino fp32"
    assert describe(make_engine(fp32_backbone, "torch")) == "torch fp32"


def test_both_cpu_layouts_and_both_engines_index_alike(tmp_path, fp32_backbone):
    photos = tmp_path / "photos"
    shutil.copytree(SAMPLES / "hat", photos / "hat")
    stored = {}
    for engine, in_workers in (("torch", True), ("openvino", True), ("openvino", False)):
        with Library(tmp_path / f"lib-{engine}-{in_workers}", create=True) as library:
            report = index_folder(photos, library, fp32_backbone, workers=2, batch_size=4,
                                  engine=engine, embed_in_workers=in_workers)
            assert report.indexed == 12 and report.engine == f"{engine} fp32"
            ids, vectors = library.stored_vectors()
            with library.Session() as s:
                from indexer.schema import Image

                paths = {i.id: i.path for i in s.query(Image)}
            stored[(engine, in_workers)] = {paths[int(i)]: v for i, v in zip(ids, vectors, strict=True)}
    reference = stored[("torch", True)]
    for key, got in stored.items():
        assert got.keys() == reference.keys()
        cosine = [float(got[p] @ reference[p]) for p in reference]
        assert min(cosine) >= 0.999, (key, min(cosine))


def test_cli_engine_option_summary_and_status(tmp_path):
    photos = tmp_path / "photos"
    shutil.copytree(SAMPLES / "shorts", photos / "shorts")
    runner = CliRunner()
    for engine in ("openvino", "torch"):
        library = tmp_path / engine
        result = runner.invoke(main, ["index", str(photos), "--library", str(library), "--quiet",
                                      "--engine", engine, "--precision", "fp32", "--workers", "1"])
        assert result.exit_code == 0, result.output
        assert f"img/s, {engine} fp32) -> " in result.output
        status = json.loads(runner.invoke(main, ["status", "--library", str(library), "--json"]).output)
        assert status["engine"] == f"{engine} fp32"


def test_bad_engine_value_is_a_one_line_error(tmp_path):
    runner = CliRunner()
    result = runner.invoke(main, ["index", str(SAMPLES), "--library", str(tmp_path / "l"), "--engine", "fast"])
    assert result.exit_code == 2 and "'fast' is not one of" in result.output and "Traceback" not in result.output
    result = runner.invoke(main, ["index", str(SAMPLES), "--library", str(tmp_path / "l")],
                           env={"LOOKALIKE_ENGINE": "fast"})
    assert result.exit_code == 1 and "LOOKALIKE_ENGINE='fast': expected one of auto, torch, openvino" in result.output
    assert "Traceback" not in result.output


def test_a_model_cache_that_cannot_be_written_is_a_one_line_error(tmp_path, monkeypatch):
    photos = tmp_path / "photos"
    photos.mkdir()
    query = min((SAMPLES / "hat").glob("*.jpg"))
    shutil.copy(query, photos / "hat.jpg")
    library = str(tmp_path / "lib")
    runner = CliRunner()
    cpu = ["--engine", "openvino", "--device", "cpu", "--precision", "fp32"]
    result = runner.invoke(main, ["index", str(photos), "--library", library, "--quiet", "--workers", "1", *cpu])
    assert result.exit_code == 0, result.output
    not_a_folder = tmp_path / "cache-file"
    not_a_folder.write_text("")
    monkeypatch.setenv("LOOKALIKE_CACHE", str(not_a_folder))
    (photos / "again.jpg").write_bytes(query.read_bytes() + b"\0")  # a new photo, to be embedded
    expected = f"cannot write converted models into {not_a_folder / 'openvino'}: Not a directory"
    result = runner.invoke(main, ["index", str(photos), "--library", library, "--quiet", "--workers", "1", *cpu])
    assert result.exit_code == 1 and type(result.exception) is SystemExit, result.output
    assert result.output.splitlines() == [f"Error: {expected} (LOOKALIKE_CACHE names their folder)"]
    monkeypatch.setenv("LOOKALIKE_ENGINE", "openvino")
    monkeypatch.setenv("LOOKALIKE_DEVICE", "cpu")
    monkeypatch.setenv("LOOKALIKE_PRECISION", "fp32")
    result = runner.invoke(main, ["search", str(SAMPLES / "shoes" / min(os.listdir(SAMPLES / "shoes"))),
                                  "--library", library, "-k", "1"])
    assert result.exit_code == 1 and type(result.exception) is SystemExit, result.output
    assert result.output.splitlines() == [f"Error: {expected} (LOOKALIKE_CACHE names their folder)"]


@pytest.mark.parametrize("damage", ["bin cut short", "xml garbage"])
def test_a_damaged_converted_model_is_converted_again(tmp_path, monkeypatch, fp32_backbone, damage):
    monkeypatch.setenv("LOOKALIKE_CACHE", str(tmp_path / "cache"))  # this test's own, damaged below
    photos = tmp_path / "photos"
    shutil.copytree(SAMPLES / "hat", photos / "hat")
    library = str(tmp_path / "lib")
    runner = CliRunner()
    result = runner.invoke(main, ["index", str(photos), "--library", library, "--quiet", "--workers", "1",
                                  "--engine", "openvino", "--device", "cpu", "--precision", "fp32"])
    assert result.exit_code == 0, result.output
    for name, value in (("ENGINE", "openvino"), ("DEVICE", "cpu"), ("PRECISION", "fp32")):
        monkeypatch.setenv(f"LOOKALIKE_{name}", value)
    search = ["search", str(min((SAMPLES / "shoes").glob("*.jpg"))), "--library", library, "-k", "3", "--json"]
    before = runner.invoke(main, search)
    assert before.exit_code == 0, before.output
    xml = OpenVinoEngine(fp32_backbone).model_path
    if damage == "bin cut short":
        weights = xml.with_suffix(".bin")
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    else:
        xml.write_bytes(os.urandom(300))
    after = runner.invoke(main, search)
    assert after.exit_code == 0, after.output
    assert json.loads(after.output) == json.loads(before.output)
    assert OpenVinoEngine(fp32_backbone).model_path == xml
    assert xml.stat().st_size > 300 and xml.with_suffix(".bin").stat().st_size > 1_000_000  # whole again


def run_without_openvino(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", WITHOUT_OPENVINO, *args], capture_output=True, text=True,
                          cwd=REPO, timeout=600)


def test_machine_without_openvino_falls_back_and_says_so(tmp_path):
    photos = tmp_path / "photos"
    shutil.copytree(SAMPLES / "hat", photos / "hat")
    done = run_without_openvino("index", str(photos), "--library", str(tmp_path / "lib"), "--quiet",
                                "--precision", "fp32", "--workers", "1")
    assert done.returncode == 0, done.stderr
    assert "indexed 12," in done.stdout and "img/s, torch fp32 (openvino not installed)) -> " in done.stdout
    asked = run_without_openvino("index", str(photos), "--library", str(tmp_path / "lib2"), "--engine", "openvino")
    assert asked.returncode == 1
    assert "Error: the openvino engine is not installed: `pip install openvino`, or --engine torch" in asked.stderr
    assert "Traceback" not in asked.stderr


# A child that imports OpenVINO the project's way while another thread runs OpenBLAS matmuls, as the
# web's retraining does while its warm-up loads the engine. It prints how many forks the import made.
IMPORT_DURING_MATMUL = """
import atexit, os, sys, threading
import numpy as np
from indexer.engines import import_openvino

forks = []
os.register_at_fork(before=lambda: forks.append(1))
parent = os.getpid()
# atexit runs after the interpreter has joined its threads, telemetry's sender pool included.
atexit.register(lambda: os.getpid() == parent and print("forks", len(forks), flush=True))
a, b = np.ones((2000, 1280), np.float32), np.ones((1280, 128), np.float32)
stop = threading.Event()

def multiply():
    while not stop.is_set():
        a @ b

thread = threading.Thread(target=multiply)
thread.start()
import_openvino()
stop.set()
thread.join()
"""


def test_importing_openvino_while_openblas_runs_neither_forks_nor_hangs(tmp_path):
    """Issue 22, item 1: `import openvino` sent telemetry from a forked process, and a fork during an
    OpenBLAS matmul on another thread deadlocked the web server (1 run in 3 of this script hung)."""
    pytest.importorskip("openvino")
    home = tmp_path / "home"  # no telemetry consent file: OpenVINO's telemetry would be on
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "TF_BUILD", "JENKINS_URL")}  # its CI opt-out
    env["HOME"] = str(home)
    for _ in range(6):
        # A deadlocked child never exits: the generous timeout turns a hang into a failure.
        done = subprocess.run([sys.executable, "-c", IMPORT_DURING_MATMUL], capture_output=True, text=True,
                              cwd=REPO, env=env, timeout=120)
        assert done.returncode == 0, done.stderr
        assert done.stdout.splitlines() == ["forks 0"], done.stdout + done.stderr
    assert list(home.iterdir()) == []  # no telemetry client id or stats written either
