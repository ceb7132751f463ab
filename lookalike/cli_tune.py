"""`lookalike tune`: fine-tune the backbone on the library's labels (kept only if it wins), or revert."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

import click

from lookalike.options import echo_json, library_option, open_library, settings_from

if TYPE_CHECKING:
    from indexer.library import Library
    from indexer.schema import Representation

INTERRUPTED = 130  # the shell's exit status for Ctrl+C


@click.command()
@library_option
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--revert", is_flag=True, help="Return to the representation the current one was tuned from.")
@click.option("--epochs", type=click.IntRange(0, 100), default=None,
              help="Most epochs to fine-tune [12]; 0 fits the head alone, which never wins.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def tune(library, as_json, revert, epochs, quiet):
    """Fine-tune the backbone on your labels; keep it only if it measures better, then re-embed."""
    from indexer.cancel import Cancelled
    from search.tuning import TuneFailed, revert_library, tune_library

    settings = settings_from(library=library)
    with open_library(settings) as lib, _Bar(disable=quiet or as_json) as bar:
        before = lib.current_representation()
        try:
            if revert:
                done = revert_library(settings, lib, progress=bar.update)
                current = lib.current_representation()
                bar.close()
                if as_json:
                    echo_json({"reverted": True, "representation": current.id if current else None,
                               "reembedded": done})
                else:
                    click.echo(f"reverted to representation {current.id if current else '?'}; re-embedded "
                               f"{done} photos")
                return
            config = None
            if epochs is not None:
                from indexer.finetune import TuneConfig

                config = TuneConfig(max_epochs=epochs)
            report = tune_library(settings, lib, config=config, progress=bar.update)
        except TuneFailed as e:
            raise click.ClickException(str(e)) from None
        except (KeyboardInterrupt, Cancelled):
            bar.close()
            click.echo(interrupted(lib, before), err=True)
            sys.exit(INTERRUPTED)
    if as_json:
        echo_json(report.as_dict())
        return
    figures = (f"held-out accuracy {report.frozen_accuracy:.3f} -> {report.tuned_accuracy:.3f} "
               f"({100 * report.gain:+.1f} points" + (
                   f", log-likelihood {report.loglik_gain:+.3f} a photo, paired test p = {report.p_value:.3f})"
                   if report.p_value == report.p_value and report.loglik_gain == report.loglik_gain else ")"))
    if report.resumed:  # figures from when it was tuned (none for an interrupted --revert)
        click.echo(f"tuned: resumed the interrupted re-embedding into representation {report.representation}; "
                   f"re-embedded {report.reembedded} photos")
    elif report.kept:
        click.echo(f"tuned: {figures}, kept; re-embedded {report.reembedded} photos")
    else:
        click.echo(f"tuned: {figures}, not kept: not measured better than the frozen representation")


def interrupted(lib: Library, before: Representation | None) -> str:
    """The line a Ctrl+C ends with: what holds now (`before`: the representation current when the
    command started). Before the re-embedding's switch (one transaction, indexer/reembed.py) the
    previous vectors still serve; after it the new representation is current, and what may be left
    is the refresh of what derives from its vectors, which the next tune finishes (SWITCHING)."""
    from search.tuning import pending_representation

    pending = pending_representation(lib)
    current = lib.current_representation()
    if current is not None and ((pending is not None and pending.id == current.id)
                                or (before is not None and current.id != before.id)):
        line = f"interrupted after the switch: representation {current.id} is current and search uses its vectors"
        if pending is None:  # switched and refreshed: only the report was not printed (nor recorded)
            return line
        return (f"{line}; the neighbour lists, learned head and labelling queue were not refreshed for them yet: "
                "`lookalike tune` refreshes them, without training again")
    return "interrupted: the library is as it was" + (
        " (its previous vectors still serve; `lookalike tune` resumes the re-embedding)" if pending is not None else "")


class _Bar:
    """One tqdm bar on stderr, restarted at each phase (decode, train, score, reembed, refresh)."""

    def __init__(self, disable: bool) -> None:
        self.disable = disable
        self.bar: Any = None
        self.phase = ""

    def update(self, phase: str, done: int, total: int) -> None:
        if self.disable:
            return
        from tqdm import tqdm

        if self.bar is None or phase != self.phase:
            self.close()
            self.bar = tqdm(total=total, desc=phase, unit="step", file=sys.stderr, leave=False)
            self.phase = phase
        self.bar.total = total
        self.bar.n = done
        self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def __enter__(self) -> _Bar:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


COMMANDS = [tune]
