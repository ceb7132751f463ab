"""bench.gpu, the GPU path's one prepared run, on the CPU: it indexes, times and reports (a dry run)."""

from __future__ import annotations

import json
import subprocess

import pytest

from bench.gpu import cycled, main
from tests.conftest import REPO, SAMPLES


def test_cycled_links_the_corpus_over_and_over(tmp_path):
    files = sorted(SAMPLES.rglob("*.jpg"))[:3]
    photos = cycled(files, 7, tmp_path / "photos")
    made = sorted(photos.rglob("*.jpg"))
    assert len(made) == 7
    assert [p.read_bytes() for p in made] == [files[i % 3].read_bytes() for i in range(7)]


def test_a_dry_run_on_the_cpu_writes_the_report(tmp_path):
    out = tmp_path / "out"
    assert main(["--corpus", str(SAMPLES), "--device", "cpu", "--photos", "24", "--per-class", "0",
                 "--batch-size", "8", "--large-batch", "16", "--model-seconds", "0.5", "--out", str(out)]) == 0
    report = json.loads((out / "gpu.json").read_text())
    assert report["machine"]["device"].startswith("cpu") and report["duplicate_signals"] is True
    assert set(report["model_only"]) == {"8", "16"} and all(r > 0 for r in report["model_only"].values())
    assert set(report["cpu_stages_ms"]) == {"read + decode", "crop", "duplicate signals"}
    assert report["end_to_end"]
    for row in report["end_to_end"]:
        assert (row["images"], row["failed"]) == (24, 0)
        assert row["ratio"] == pytest.approx(row["rate"] / row["model_only_rate"], rel=0.01)
    assert "tune" not in report  # --per-class 0
    text = (out / "gpu.md").read_text()
    assert "| end to end, 24 photos," in text and report["engine"] in text


def test_the_device_scripts_parse():
    for script in ("bench/gpu.sh", "bench/gpu_prepare.sh"):
        subprocess.run(["bash", "-n", str(REPO / script)], check=True)
