"""docker-compose.yml describes the real deployment (no Docker engine here, so it is parsed)."""

from __future__ import annotations

from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def load():
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())


def test_compose_names_a_web_service_and_a_one_shot_index_job():
    services = load()["services"]
    assert {"web", "index"} <= set(services)
    index, web = services["index"], services["web"]
    assert index["command"][:2] == ["lookalike", "index"]
    assert index["restart"] == "no"
    assert web["command"][:2] == ["lookalike", "serve"]
    assert web["depends_on"]["index"]["condition"] == "service_completed_successfully"


def test_photos_are_read_only_and_the_library_is_shared():
    compose = load()
    services = compose["services"]
    for name in ("index", "web"):
        volumes = services[name]["volumes"]
        assert any(v.endswith(":/photos:ro") for v in volumes), volumes
        assert "library:/data" in volumes
        assert services[name]["environment"]["LOOKALIKE_LIBRARY"] == "/data/library"
    assert "library" in compose["volumes"]


def test_the_index_job_reserves_a_gpu_and_the_ui_stays_on_localhost():
    services = load()["services"]
    devices = services["index"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]
    assert services["web"]["ports"] == ["127.0.0.1:5000:5000"]
    assert (REPO / "Dockerfile").is_file()
