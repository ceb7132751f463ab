"""The learned head on disk: one .npz beside the library's SQLite file, written atomically."""

from __future__ import annotations

import json
import uuid

import numpy as np

from indexer.npz import read_npz, write_npz
from search.labelling.learned_head import Head, Probe
from search.labelling.spreading import ALPHA

HEAD_FILE = "head.npz"  # beside the library's SQLite file
HEAD_FORMAT = 1


def save_head(path, head: Head, fingerprint: dict) -> str:
    """Write the head atomically; returns the token that names this training."""
    token = uuid.uuid4().hex
    facts = {
        "format": HEAD_FORMAT,
        "token": token,
        "fingerprint": fingerprint,
        "method": head.method,
        "classes": list(head.classes),
        "temperature": head.temperature,
        "accuracy": head.accuracy,
        "threshold": head.threshold,
        "coverage": head.coverage,
        "cv_images": head.cv_images,
        "k": head.k,
        "knn_temperature": head.knn_temperature,
        "blend_weight": head.blend_weight,
        "spread_weight": head.spread_weight,
        "spread_alpha": head.spread_alpha,
        "probe_scale": head.probe.scale if head.probe else None,
    }
    arrays: dict[str, np.ndarray] = {"facts": np.array(json.dumps(facts))}
    if head.probe is not None:
        arrays.update(probe_mean=head.probe.mean, probe_weight=head.probe.weight, probe_bias=head.probe.bias)
    if head.projection is not None:
        arrays["projection"] = head.projection
    write_npz(path, arrays)  # writers: the index, the web
    return token


def load_head(path) -> tuple[Head, dict] | None:
    """(head, facts) from the file, or None when there is none, it is damaged (a warning: the
    labeller retrains it) or it is from another format."""
    return read_npz(path, _read_head)


def _read_head(data) -> tuple[Head, dict] | None:
    facts = json.loads(str(data["facts"]))
    if not isinstance(facts, dict) or facts.get("format") != HEAD_FORMAT:
        return None
    probe = (
        Probe(data["probe_mean"], facts["probe_scale"], data["probe_weight"], data["probe_bias"])
        if "probe_weight" in data
        else None
    )
    projection = data["projection"] if "projection" in data else None
    head = Head(
        facts["method"], tuple(facts["classes"]), facts["temperature"], facts["accuracy"], facts["threshold"],
        facts["coverage"], facts["cv_images"], facts["k"], facts["knn_temperature"],
        probe=probe, projection=projection, blend_weight=facts["blend_weight"],
        spread_weight=facts.get("spread_weight", 0.5), spread_alpha=facts.get("spread_alpha", ALPHA),
    )
    return head, facts
