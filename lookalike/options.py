"""The click options, settings and output every command module shares (a leaf: it imports no command module)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from indexer.settings import SettingsError, kind
from web.settings import FIELDS, Settings

SAMPLES = Path(__file__).parent / "samples"


def setting_type(name: str) -> click.ParamType:
    """The click type of a setting's option, from the ranges Settings declares (LOOKALIKE_* variables
    are checked against the same ones by Settings.from_env)."""
    meta = FIELDS[name].metadata
    if meta["choices"]:
        return click.Choice(meta["choices"])
    t = kind(FIELDS[name])
    if t is int:
        return click.IntRange(meta["lo"], meta["hi"])
    if t is float:
        return click.FloatRange(meta["lo"], meta["hi"], min_open=meta["lo_open"])
    return click.STRING


def library_option(f):
    return click.option(
        "--library", type=click.Path(file_okay=False, path_type=Path),
        default=None, help="Library folder [env LOOKALIKE_LIBRARY; default ./lookalike-library].",
    )(f)


def settings_from(**options) -> Settings:
    """Settings from the options given, the LOOKALIKE_* variables and the defaults.

    Raises click.ClickException (one line) for a variable that does not parse or is out of range.
    """
    try:
        return Settings.from_env(**options)
    except SettingsError as e:
        raise click.ClickException(str(e)) from None


def open_library(settings: Settings, *, create: bool = False):
    from indexer.library import Library, LibraryError

    try:
        return Library(settings.library, create=create)
    except LibraryError as e:
        raise click.ClickException(str(e)) from None


def backbone_options(f):
    for option in reversed([
        click.option("--backbone", default=None,
                     help="Backbone name (see `lookalike backbones`) [default efficientnet_lite0]."),
        click.option("--weights", type=click.Path(dir_okay=False, path_type=Path), default=None,
                     help="Weights file for the backbone (offline use)."),
        click.option("--device", default=None, help="auto, cpu, cuda, cuda:N or mps [default auto]."),
        click.option("--precision", default=None, type=setting_type("precision"),
                     help="auto: bf16 on GPUs and on CPUs with native bf16, else fp32."),
        click.option("--engine", default=None, type=setting_type("engine"),
                     help="auto: OpenVINO on a CPU when installed, else PyTorch; ray: index on Ray "
                          "(same as --runner ray) [default auto]."),
    ]):
        f = option(f)
    return f


def run_index(settings: Settings, photos: Path, **options):
    """`search.refresh.index_and_refresh`, its one-line errors as click's."""
    from search.refresh import IndexFailed, index_and_refresh

    try:
        return index_and_refresh(settings, photos, **options)
    except IndexFailed as e:
        raise click.ClickException(str(e)) from None


def echo_json(value: object) -> None:
    click.echo(json.dumps(value, indent=2, default=str))


def memory_budget_option(f):
    def parse(ctx, param, value):
        from indexer.settings import parse

        if value is None:
            return None
        try:
            return parse("memory_budget", value, source="--memory-budget")
        except SettingsError as e:
            raise click.BadParameter(str(e)) from None

    return click.option(
        "--memory-budget", default=None, callback=parse,
        help="RAM the vector index may take (e.g. 4G, 512M); picks the index type [env "
             "LOOKALIKE_MEMORY_BUDGET; default 4G, or what the library last used].",
    )(f)
