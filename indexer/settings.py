"""Settings shared by the command line, the batch job and the web app: one frozen dataclass."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path

ENV_PREFIX = "LOOKALIKE_"


def _help(text: str) -> dict:
    return {"help": text}


@dataclass(frozen=True)
class Settings:
    """Every setting with its default. Precedence: CLI option > LOOKALIKE_<NAME> variable > default."""

    library: Path = field(
        default=Path("lookalike-library"), metadata=_help("library folder (SQLite + FAISS + thumbnails)"))
    backbone: str = field(default="efficientnet_lite0", metadata=_help("backbone name (`lookalike backbones`)"))
    weights: Path | None = field(default=None, metadata=_help("weights file for the backbone (offline use)"))
    device: str = field(default="auto", metadata=_help("auto, cpu, cuda, cuda:N or mps"))
    precision: str = field(default="auto", metadata=_help("auto (bf16 where native), fp32, bf16 or fp16"))
    engine: str = field(default="auto", metadata=_help("auto (OpenVINO on a CPU when installed), torch or openvino"))
    batch_size: int = field(default=32, metadata=_help("images per model batch"))
    workers: int | None = field(
        default=None, metadata=_help("worker processes (default: cores on a CPU, cores - 1 with a GPU; at most 8)")
    )
    k: int = field(default=20, metadata=_help("neighbours that vote in k-NN labelling"))
    temperature: float = field(default=0.07, metadata=_help("k-NN vote temperature: weight exp(sim / T)"))
    host: str = field(default="127.0.0.1", metadata=_help("address the web server binds"))
    port: int = field(default=5000, metadata=_help("port the web server listens on"))
    max_upload_mb: float = field(default=20.0, metadata=_help("largest accepted upload, MB"))
    token: str | None = field(
        default=None, metadata=_help("token required for write actions (set when not on localhost)")
    )

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, **overrides: object) -> Settings:
        """Defaults, then LOOKALIKE_* variables, then explicit overrides (None means 'not given')."""
        environ = os.environ if environ is None else environ
        values: dict[str, object] = {}
        for f in dataclasses.fields(cls):
            raw = environ.get(ENV_PREFIX + f.name.upper())
            if raw not in (None, ""):
                values[f.name] = _coerce(f, raw)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


def _coerce(f: dataclasses.Field, raw: str) -> object:
    kind = str(f.type)
    if "Path" in kind:
        return Path(raw)
    if "int" in kind:
        return int(raw)
    if "float" in kind:
        return float(raw)
    return raw
