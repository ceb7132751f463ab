"""Settings shared by the command line, the batch job and the web app: one frozen dataclass."""

from __future__ import annotations

import dataclasses
import ipaddress
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from indexer.engines import ENGINES

ENV_PREFIX = "LOOKALIKE_"


class SettingsError(ValueError):
    """A setting's value cannot be used; the message names the setting and what it accepts."""


def _setting(default: Any, text: str, *, lo: float | None = None, hi: float | None = None,
             lo_open: bool = False, choices: tuple[str, ...] | None = None, size: bool = False) -> Any:
    """A field with its help text and the values it accepts: the one place both the command-line
    options (lookalike/options.py) and the LOOKALIKE_* variables take their checks from.
    `size`: an amount of memory written like 4G or 512M (`parse_size`)."""
    return field(default=default, metadata={"help": text, "lo": lo, "hi": hi, "lo_open": lo_open,
                                            "choices": choices, "size": size})


@dataclass(frozen=True)
class Settings:
    """Every setting with its default. Precedence: CLI option > LOOKALIKE_<NAME> variable > default."""

    library: Path = _setting(Path("lookalike-library"), "library folder (SQLite + FAISS + thumbnails)")
    backbone: str = _setting("efficientnet_lite0", "backbone name (`lookalike backbones`)")
    weights: Path | None = _setting(None, "weights file for the backbone (offline use)")
    device: str = _setting("auto", "auto, cpu, cuda, cuda:N or mps")
    precision: str = _setting("auto", "auto (bf16 where native), fp32, bf16 or fp16",
                              choices=("auto", "fp32", "bf16", "fp16"))
    engine: str = _setting("auto", "auto (OpenVINO on a CPU when installed), torch, openvino; or ray: the Ray "
                                   "runner, its workers on the engine auto picks", choices=(*ENGINES, "ray"))
    batch_size: int = _setting(32, "images per model batch", lo=1, hi=4096)
    workers: int | None = _setting(
        None, "worker processes (default: cores on a CPU, cores - 1 with a GPU; at most 8)", lo=0, hi=64
    )
    runner: str = _setting("local", "where decoding and embedding run: local or ray", choices=("local", "ray"))
    ray_address: str | None = _setting(
        None, "Ray cluster address for --runner ray (default: start Ray on this machine)"
    )
    memory_budget: int | None = _setting(
        None, "RAM the vector index may take, e.g. 4G or 512M: picks the index type (default 4G)", size=True
    )
    k: int = _setting(20, "neighbours that vote in k-NN labelling", lo=1, hi=1000)
    temperature: float = _setting(0.07, "k-NN vote temperature: weight exp(sim / T)", lo=0, lo_open=True)
    host: str = _setting("127.0.0.1", "address the web server binds")
    port: int = _setting(5000, "port the web server listens on", lo=0, hi=65535)
    max_upload_mb: float = _setting(20.0, "largest accepted upload, MB", lo=0, lo_open=True, hi=1024)
    token: str | None = _setting(None, "token required for write actions (set when not on localhost)")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: object) -> Settings:
        """Defaults, then LOOKALIKE_* variables, then explicit overrides (None means 'not given').

        Raises SettingsError naming the variable whose value does not parse or is out of range.
        """
        env: Mapping[str, str] = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            name = ENV_PREFIX + f.name.upper()
            raw = env.get(name)
            if raw not in (None, ""):
                values[f.name] = parse(f.name, raw, source=name)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


FIELDS = {f.name: f for f in dataclasses.fields(Settings)}


def kind(name: str) -> type:
    """The Python type of a setting's values: Path, str, int or float."""
    annotation = str(FIELDS[name].type)
    for candidate in (Path, int, float):
        if candidate.__name__ in annotation:
            return candidate
    return str


def accepts(name: str) -> str:
    """What a setting accepts, in words: 'an integer from 0 to 64'."""
    meta = FIELDS[name].metadata
    if meta["choices"]:
        return "one of " + ", ".join(meta["choices"])
    if meta["size"]:
        return "a size such as 4G, 512M or a number of bytes"
    t = kind(name)
    noun = {int: "an integer", float: "a number"}.get(t, "a value")
    lo, hi = meta["lo"], meta["hi"]
    if lo is None:
        return noun
    if hi is None:
        return f"{noun} above {lo:g}" if meta["lo_open"] else f"{noun} of at least {lo:g}"
    if meta["lo_open"]:
        return f"{noun} above {lo:g} and at most {hi:g}"
    return f"{noun} from {lo:g} to {hi:g}"


def parse(name: str, raw: str, *, source: str | None = None) -> Any:
    """One setting's value from text, checked as its command-line option checks it.

    Raises SettingsError saying which `source` (default: the setting's name) is wrong and why.
    """
    meta = FIELDS[name].metadata
    if meta["size"]:
        try:
            return parse_size(raw)
        except ValueError:
            raise SettingsError(f"{source or name}={raw!r}: expected {accepts(name)}") from None
    t = kind(name)
    try:
        value = t(raw.strip()) if t in (int, float) else t(raw)
    except ValueError:
        value = None
    if value is None or (t is float and not math.isfinite(value)):
        raise SettingsError(f"{source or name}={raw!r}: expected {accepts(name)}")
    lo, hi = meta["lo"], meta["hi"]
    too_low = lo is not None and (value <= lo if meta["lo_open"] else value < lo)
    too_high = hi is not None and value > hi
    if too_low or too_high or (meta["choices"] and value not in meta["choices"]):
        raise SettingsError(f"{source or name}={raw!r}: expected {accepts(name)}")
    return value


def is_loopback(host: str) -> bool:
    """Whether a listening address or Host name is this machine only: 127.0.0.0/8, ::1, localhost.

    The one definition: `lookalike serve` warns beyond it, and the web app accepts only loopback
    Host names while listening on it.
    """
    name = host.strip().removeprefix("[").removesuffix("]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_size(text: str) -> int:
    """'4G', '512M', '1.5G', '1000000' (bytes) -> bytes. Raises ValueError with a readable message."""
    raw = str(text).strip().upper().removesuffix("IB").removesuffix("B")
    unit = raw[-1:] if raw[-1:] in _UNITS else ""
    try:
        value = float(raw[: len(raw) - len(unit)])
    except ValueError:
        raise ValueError(f"{text!r} is not a size: use e.g. 4G, 512M or a number of bytes") from None
    if not value > 0 or value == float("inf"):
        raise ValueError(f"{text!r} is not a positive size")
    return int(value * _UNITS[unit])
