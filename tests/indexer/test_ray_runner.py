"""The Ray runner on a local Ray (2 CPUs, loopback): the same library as the local runner; a killed run resumes."""

from __future__ import annotations

import importlib.util
import json
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from click.testing import CliRunner
from sqlalchemy import select

from indexer.library import Library
from indexer.schema import Image
from tests.conftest import SAMPLES, TEST_DATA
from tests.indexer.test_pipeline import photo
from tests.reliability.conftest import CLI, library_vectors

if importlib.util.find_spec("ray") is None:  # found, not imported: Ray stays out of this process
    pytest.skip("the ray extra is not installed", allow_module_level=True)


# Ray runs in a child process, never in pytest's: its native threads outlive ray.shutdown() (ten of
# them here), and nothing of Ray should share a process with the rest of the suite.
RAY_JOB = """
import json, sys
from pathlib import Path

import ray

from indexer.backbone import Backbone
from indexer.library import Library
from indexer.pipeline import index_folder

photos, out = Path(sys.argv[1]), Path(sys.argv[2])
ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False)
backbone = Backbone(device="cpu", precision="fp32")
reports = {}
for name, runner in (("local", "local"), ("ray", "ray"), ("again", "ray")):  # again: a re-run by Ray
    with Library(out / runner, create=True) as library:
        r = index_folder(photos, library, backbone, batch_size=8, workers=2, runner=runner)
    reports[name] = {"indexed": r.indexed, "unchanged": r.unchanged, "failed": dict(r.failed)}
ray.shutdown()
print(json.dumps(reports))
"""


@pytest.fixture
def photos(tmp_path):
    """Real sample photos in two folders, a few made ones, and bad files."""
    root = tmp_path / "photos"
    for folder in ("dress", "hat"):
        shutil.copytree(SAMPLES / folder, root / folder)
    photo(root / "made" / "alpha.png", 2, mode="RGBA")
    photo(root / "made" / "gray.jpg", 3, mode="L")
    good = (root / "made" / "gray.jpg").read_bytes()
    (root / "made" / "broken.jpg").write_bytes(good[: len(good) // 2])
    (root / "made" / "empty.png").write_bytes(b"")
    shutil.copy(TEST_DATA / "bad" / "pillow__decompression_bomb.gif", root / "made" / "bomb.gif")
    return root


def rows(path):
    with Library(path) as library, library.Session() as s:
        return {
            r.path: (r.status, r.error.split(":", 1)[0] if r.error else None, r.width, r.height, r.hash, r.format)
            for r in s.scalars(select(Image))
        }


def test_both_runners_give_the_same_rows_vectors_and_failures(photos, tmp_path):
    job = subprocess.run([sys.executable, "-c", RAY_JOB, str(photos), str(tmp_path)], capture_output=True,
                         text=True, check=False, timeout=900)
    assert job.returncode == 0, job.stdout + job.stderr
    reports = json.loads(job.stdout.strip().splitlines()[-1])
    assert reports["ray"]["indexed"] == reports["local"]["indexed"] > 20
    assert reports["ray"]["failed"] == reports["local"]["failed"] and sum(reports["ray"]["failed"].values()) == 3
    assert rows(tmp_path / "ray") == rows(tmp_path / "local")
    local, remote = library_vectors(tmp_path / "local"), library_vectors(tmp_path / "ray")
    assert remote.keys() == local.keys()
    cosines = [float(np.dot(local[p], remote[p])) for p in local]
    assert min(cosines) >= 0.999
    # The re-run by Ray embeds nothing.
    assert reports["again"]["indexed"] == 0 and reports["again"]["unchanged"] == reports["local"]["indexed"] + 3


def indexed(library):
    import sqlite3

    try:
        db = sqlite3.connect(f"file:{library / 'library.db'}?mode=ro", uri=True, timeout=5)
        try:
            return db.execute("select count(*) from images where status = 'indexed'").fetchone()[0]
        finally:
            db.close()
    except sqlite3.Error:
        return 0


def test_a_killed_ray_run_resumes_to_the_local_result(photos, tmp_path):
    command = [sys.executable, "-c", CLI, "index", str(photos), "--quiet", "--batch-size", "4",
               "--runner", "ray", "--library"]
    proc = subprocess.Popen([*command, str(tmp_path / "killed")], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 300
    while proc.poll() is None and indexed(tmp_path / "killed") < 4 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, proc.stdout.read().decode()  # still running: killed midway
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    proc.stdout.close()
    assert 0 < indexed(tmp_path / "killed") < len(rows_of(photos))

    # Resumed with the spelling of the option: `--engine ray` is the Ray runner too.
    resumed_command = [*command[:-3], "--engine", "ray", "--library", str(tmp_path / "killed")]
    resumed = subprocess.run(resumed_command, capture_output=True, text=True, check=False, timeout=600)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert " on ray) -> " in resumed.stdout
    clean = subprocess.run([*command[:-3], "--library", str(tmp_path / "clean")], capture_output=True,
                           text=True, check=False, timeout=600)
    assert clean.returncode == 0, clean.stderr
    assert rows(tmp_path / "killed") == rows(tmp_path / "clean")
    want, got = library_vectors(tmp_path / "clean"), library_vectors(tmp_path / "killed")
    assert got.keys() == want.keys()
    assert min(float(np.dot(want[p], got[p])) for p in want) >= 0.999


def rows_of(photos):
    return [p for p in photos.rglob("*") if p.is_file()]


@pytest.mark.parametrize("option", [["--runner", "ray"], ["--engine", "ray"]])
def test_without_ray_the_option_says_how_to_install_it(monkeypatch, photos, tmp_path, option):
    from lookalike.cli import main

    monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ImportError
    result = CliRunner().invoke(main, ["index", str(photos), *option, "--library", str(tmp_path / "lib")])
    assert result.exit_code == 1
    assert result.output.strip() == "Error: the ray runner needs Ray: pip install 'lookalike[ray]'"
    assert not (tmp_path / "lib").exists()


def test_an_unreachable_cluster_is_one_line_at_once_and_creates_no_library(tmp_path):
    """ray.init retries a cluster that does not answer without end (over 5 minutes, seen): the
    address is tried first, and the library is not created for a run that cannot start."""
    import socket

    from lookalike.cli import main

    with socket.socket() as s:  # a port that was free a moment ago: nothing listens on it
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    photos = tmp_path / "photos"
    shutil.copytree(SAMPLES / "hat", photos)
    for address in (f"127.0.0.1:{port}", f"ray://127.0.0.1:{port}"):
        result = CliRunner().invoke(main, ["index", str(photos), "--library", str(tmp_path / "lib"),
                                           "--runner", "ray", "--ray-address", address])
        assert result.exit_code == 1, result.output
        assert f"cannot reach the Ray cluster at {address}: Connection refused" in result.output
        assert not (tmp_path / "lib").exists()
