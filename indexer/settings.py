"""Settings shared by the command line, the batch job and the web app: one frozen dataclass
(the web server's own settings extend it in web/settings.py)."""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from indexer.engines import ENGINES

ENV_PREFIX = "LOOKALIKE_"
S = TypeVar("S", bound="Settings")


class SettingsError(ValueError):
    """A setting's value cannot be used; the message names the setting and what it accepts."""


def setting(default: Any, text: str, *, lo: float | None = None, hi: float | None = None,
             lo_open: bool = False, choices: tuple[str, ...] | None = None, size: bool = False) -> Any:
    """A field with its help text and the values it accepts: the one place both the command-line
    options (lookalike/options.py) and the LOOKALIKE_* variables take their checks from.
    `size`: an amount of memory written like 4G or 512M (`parse_size`)."""
    return field(default=default, metadata={"help": text, "lo": lo, "hi": hi, "lo_open": lo_open,
                                            "choices": choices, "size": size})


@dataclass(frozen=True)
class Settings:
    """Every setting with its default. Precedence: CLI option > LOOKALIKE_<NAME> variable > default.

    The web server's own settings extend this class (web.settings.Settings)."""

    library: Path = setting(Path("lookalike-library"), "library folder (SQLite + FAISS + thumbnails)")
    backbone: str = setting("efficientnet_lite0", "backbone name (`lookalike backbones`)")
    weights: Path | None = setting(None, "weights file for the backbone (offline use)")
    device: str = setting("auto", "auto, cpu, cuda, cuda:N or mps")
    precision: str = setting("auto", "auto (bf16 where native), fp32, bf16 or fp16",
                              choices=("auto", "fp32", "bf16", "fp16"))
    engine: str = setting("auto", "auto (OpenVINO on a CPU when installed), torch, openvino; or ray: the Ray "
                                   "runner, its workers on the engine auto picks", choices=(*ENGINES, "ray"))
    batch_size: int = setting(32, "images per model batch", lo=1, hi=4096)
    workers: int | None = setting(
        None, "worker processes (default: cores on a CPU, cores - 1 with a GPU; at most 8)", lo=0, hi=64
    )
    runner: str = setting("local", "where decoding and embedding run: local or ray", choices=("local", "ray"))
    ray_address: str | None = setting(
        None, "Ray cluster address for --runner ray (default: start Ray on this machine)"
    )
    memory_budget: int | None = setting(
        None, "RAM the vector index may take, e.g. 4G or 512M: picks the index type (default 4G)", size=True
    )
    k: int = setting(20, "neighbours that vote in k-NN labelling", lo=1, hi=1000)
    temperature: float = setting(0.07, "k-NN vote temperature: weight exp(sim / T)", lo=0, lo_open=True)

    @classmethod
    def from_env(cls: type[S], environ: Mapping[str, str] | None = None, **overrides: object) -> S:
        """Defaults, then LOOKALIKE_* variables, then explicit overrides (None means 'not given').

        Raises SettingsError naming the variable whose value does not parse or is out of range.
        """
        env: Mapping[str, str] = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            name = ENV_PREFIX + f.name.upper()
            raw = env.get(name)
            if raw not in (None, ""):
                values[f.name] = parse_field(f, raw, source=name)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


FIELDS = {f.name: f for f in dataclasses.fields(Settings)}


def kind(f: dataclasses.Field) -> type:
    """The Python type of a setting's values: Path, str, int or float."""
    annotation = str(f.type)
    for candidate in (Path, int, float):
        if candidate.__name__ in annotation:
            return candidate
    return str


def accepts(f: dataclasses.Field) -> str:
    """What a setting accepts, in words: 'an integer from 0 to 64'."""
    meta = f.metadata
    if meta["choices"]:
        return "one of " + ", ".join(meta["choices"])
    if meta["size"]:
        return "a size such as 4G, 512M or a number of bytes"
    t = kind(f)
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
    """One of these settings' values from text (`parse_field`)."""
    return parse_field(FIELDS[name], raw, source=source)


def parse_field(f: dataclasses.Field, raw: str, *, source: str | None = None) -> Any:
    """One setting's value from text, checked as its command-line option checks it.

    Raises SettingsError saying which `source` (default: the setting's name) is wrong and why.
    """
    name = f.name
    meta = f.metadata
    if meta["size"]:
        try:
            return parse_size(raw)
        except ValueError:
            raise SettingsError(f"{source or name}={raw!r}: expected {accepts(f)}") from None
    t = kind(f)
    try:
        value = t(raw.strip()) if t in (int, float) else t(raw)
    except ValueError:
        value = None
    if value is None or (t is float and not math.isfinite(value)):
        raise SettingsError(f"{source or name}={raw!r}: expected {accepts(f)}")
    lo, hi = meta["lo"], meta["hi"]
    too_low = lo is not None and (value <= lo if meta["lo_open"] else value < lo)
    too_high = hi is not None and value > hi
    if too_low or too_high or (meta["choices"] and value not in meta["choices"]):
        raise SettingsError(f"{source or name}={raw!r}: expected {accepts(f)}")
    return value


_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_size(text: str) -> int:
    """'4G', '512M', '1.5G', '1000000' (bytes) -> bytes. Raises ValueError with a readable message."""
    raw = str(text).strip().upper().removesuffix("IB").removesuffix("B")
    unit = raw[-1:] if raw[-1:] in _UNITS else ""
    try:
        value = float(raw[: len(raw) - len(unit)])
    except ValueError:
        raise ValueError(f"{text!r} is not a size: use e.g. 4G, 512M or a number of bytes") from None
    if not value > 0 or value == float("inf") or int(value * _UNITS[unit]) < 1:  # 0.5 bytes: none at all
        raise ValueError(f"{text!r} is not a positive size")
    return int(value * _UNITS[unit])
