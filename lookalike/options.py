"""Options and helpers every command module shares (a leaf: it imports no command module)."""

from __future__ import annotations

from pathlib import Path

import click

from indexer.settings import FIELDS, Settings, SettingsError, kind

SAMPLES = Path(__file__).parent / "samples"


def setting_type(name: str) -> click.ParamType:
    """The click type of a setting's option, from the ranges Settings declares (LOOKALIKE_* variables
    are checked against the same ones by Settings.from_env)."""
    meta = FIELDS[name].metadata
    if meta["choices"]:
        return click.Choice(meta["choices"])
    t = kind(name)
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


def run_index(settings: Settings, photos: Path, *, reembed: bool = False, progress: bool = True):
    """Index `photos` into the settings' library, creating it only once there is something to put
    in it: a bad backbone or a folder without photos leaves no library folder behind. A library
    another indexer holds is reported before torch is imported or a model loaded."""
    from indexer.library import DB_FILE, Library, LibraryError
    from indexer.scan import has_images

    exists = (Path(settings.library) / DB_FILE).exists()
    if exists:
        try:
            with Library(settings.library) as library, library.writer_lock():
                pass
        except LibraryError as e:
            raise click.ClickException(str(e)) from None
    from indexer.backbone import Backbone, BackboneError
    from indexer.engines import EngineError
    from indexer.pipeline import index_folder
    from indexer.runners import get_runner
    from indexer.runners.ray import RayUnavailable

    try:
        runner_name, engine = settings.runner, settings.engine
        if engine == "ray":  # `--engine ray` (issue 12's contract) is `--runner ray` on the engine auto picks
            runner_name, engine = "ray", "auto"
        runner = get_runner(runner_name, ray_address=settings.ray_address)
        backbone = Backbone(settings.backbone, weights=settings.weights, device=settings.device,
                            precision=settings.precision)
        if not exists and not has_images(photos):
            raise click.ClickException(
                f"no photos found under {photos} (looked for .jpg, .png, .heic, .webp and other image "
                f"files): nothing to index, no library created"
            )
        with open_library(settings, create=True) as library:
            report = index_folder(photos, library, backbone, batch_size=settings.batch_size,
                                  workers=settings.workers, reembed=reembed, progress=progress,
                                  memory_budget=settings.memory_budget, runner=runner, engine=engine)
            if report.engine:
                with library.Session.begin() as s:
                    library.set_meta(s, engine=report.engine)
            update_suggestions(settings, library, backbone, progress=progress)
            return report
    except (LibraryError, BackboneError, EngineError, RayUnavailable, ValueError) as e:
        raise click.ClickException(str(e)) from None


def update_suggestions(settings: Settings, library, backbone, *, progress: bool) -> None:
    """Bring the neighbour lists and suggestions up to date after a run (by difference once they
    exist): the new photos' suggestions are there at once, and the web has nothing to redo. The
    web's labeller, so that what is stored is what the web would store."""
    from search.labelling.learning import LearningLabeller
    from search.searcher import Searcher

    labeller = LearningLabeller(Searcher(library, backbone), k=settings.k, temperature=settings.temperature)
    if labeller.labels_changed():  # or no head yet: train it here rather than at the web's start
        labeller.retrain()
    else:  # new photos get k-NN votes now; the web retrains on the new vectors in the background
        labeller.refresh(progress=progress)
    labeller.clusters()  # the labelling queue's clusters, by difference: the web's first queue is quick


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
