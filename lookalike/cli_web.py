"""Commands that serve the web UI: serve, up."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import webbrowser
from pathlib import Path
from typing import NoReturn

import click

from lookalike.options import SAMPLES, library_option, open_library, run_index, setting_type, settings_from

log = logging.getLogger(__name__)


def server_options(f):
    for option in reversed([
        click.option("--host", default=None,
                     help="Address to listen on [default 127.0.0.1: this machine only]."),
        click.option("--port", type=setting_type("port"), default=None,
                     help="Port to listen on [default 5000; 0 picks a free one]."),
    ]):
        f = option(f)
    return f


def watch_options(f):
    for option in reversed([
        click.option("--watch", is_flag=True,
                     help="Watch the library's photo folder and index new, changed, moved and deleted photos "
                          "as they change, with the model kept loaded."),
        click.option("--poll", is_flag=True,
                     help="With --watch: look for changes every second instead of being told by the system "
                          "(network shares, some container mounts)."),
    ]):
        f = option(f)
    return f


def run_server(settings, *, open_browser: bool = False, watch: bool = False, poll: bool = False) -> None:
    """Serve the library with waitress until interrupted; with `watch`, index its photo folder as it changes."""
    from waitress import create_server

    from indexer.library import LibraryError
    from web import create_app, services
    from web.settings import is_loopback

    try:
        app = create_app(settings)
    except LibraryError as e:
        raise click.ClickException(str(e)) from None
    if watch:
        from web.watching import start_watching

        try:
            watching = start_watching(app, poll=poll)
        except LibraryError as e:
            raise click.ClickException(str(e)) from None
        click.echo(f"watching {watching.root} ({watching.watcher.observer_kind}): photos are indexed as they change")
    if not is_loopback(settings.host) and settings.token is None:
        click.secho(
            f"warning: listening on {settings.host} without LOOKALIKE_TOKEN: anyone who can reach "
            f"this port can change labels. Set LOOKALIKE_TOKEN to require a token for changes.",
            fg="yellow", err=True,
        )
    try:
        server = create_server(app, host=settings.host, port=settings.port, ident="lookalike")
    except (OSError, ValueError) as e:  # ValueError: waitress finds no such address
        raise click.ClickException(f"cannot listen on {settings.host}:{settings.port}: {e}") from None
    shown_host = "127.0.0.1" if settings.host in ("0.0.0.0", "::") else settings.host
    if ":" in shown_host:
        shown_host = f"[{shown_host}]"
    url = f"http://{shown_host}:{server.effective_port}/"
    with app.app_context():
        svc = services()
    # Load the model and the stored neighbour lists while the first pages are browsed, so the
    # first upload and the first labelling queue are quick.
    warm_up = threading.Thread(target=_warm_up, args=(svc.searcher, svc.labeller), daemon=True)
    # waitress's run() catches the KeyboardInterrupt of Ctrl+C and returns: note the signal itself.
    # A plain flag, no lock: a second Ctrl+C runs this handler inside the first one. It changes
    # nothing: the server is already on its way out.
    interrupted = False

    def on_ctrl_c(signum, frame):
        nonlocal interrupted
        if not interrupted:
            interrupted = True
            signal.default_int_handler(signum, frame)  # raises KeyboardInterrupt, as without this handler

    # Only over Python's own handler: a process started with Ctrl+C ignored (a script's background
    # job) keeps ignoring it.
    previous = signal.getsignal(signal.SIGINT)
    if previous is signal.default_int_handler:
        signal.signal(signal.SIGINT, on_ctrl_c)
    try:
        warm_up.start()
        click.echo(f"serving {settings.library} on {url} (Ctrl+C to stop)")
        if open_browser:
            threading.Timer(0.5, webbrowser.open, args=(url,)).start()
        server.run()
    except KeyboardInterrupt:
        pass  # Ctrl+C before waitress's loop began
    finally:
        server.close()
        if previous is signal.default_int_handler:
            signal.signal(signal.SIGINT, previous)
    if interrupted:
        click.echo("stopped (Ctrl+C)", err=True)
        _exit_now()


def _exit_now() -> NoReturn:
    """Leave at once on Ctrl+C, skipping the interpreter's finalisation.

    At exit Python 3.11 ends daemon threads with pthread_exit(); one that is inside torch's C++ code
    (the warm-up building the model, a background retrain, the duplicates search) unwinds through a
    noexcept frame and the process aborts ("terminate called without an active exception",
    SIGABRT). Waiting for them instead held Ctrl+C up to a minute on a busy machine. Nothing is left
    to save: the server is closed, SQLite commits as it goes, a retrain resumes on the next start.
    """
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _warm_up(searcher, labeller) -> None:
    try:
        labeller.refresh(wait=True)  # a background thread: it may wait for an indexer's run
        searcher.warm_up()  # loads (and compiles) the query model
        labeller.queue_ids()  # the labelling queue's order: seconds at a million photos
    except Exception as e:  # the first request that needs them reports it properly
        log.warning("could not prepare the model and suggestions in advance: %s", e)
    else:
        log.info("warm-up done: the model and the label suggestions are ready")


@click.command()
@library_option
@server_options
@watch_options
def serve(library, host, port, watch, poll):
    """Serve the web UI and JSON API of a library (waitress; this machine only by default)."""
    run_server(settings_from(library=library, host=host, port=port), watch=watch, poll=poll)


def label_half_of_samples(library) -> int:
    """Give every other sample photo of each folder its folder name as an imported label.

    Only when the library has no labels yet, so that `up` never overrides what someone labelled.
    """
    from sqlalchemy import func, select

    from indexer.schema import IMPORTED, INDEXED, Image, Label
    from search.labelling.labels import set_label

    with library.Session.begin() as s:
        if s.scalar(select(func.count()).select_from(Label)):
            return 0
        rows = s.execute(
            select(Image.id, Image.folder).where(Image.status == INDEXED).order_by(Image.folder, Image.path)
        ).all()
        n = 0
        seen: dict[str, int] = {}
        for image_id, folder in rows:
            i = seen[folder] = seen.get(folder, -1) + 1
            if folder and i % 2 == 0:
                set_label(s, image_id, folder.rsplit("/", 1)[-1], source=IMPORTED)
                n += 1
    return n


@click.command()
@click.argument("photos", required=False, type=click.Path(exists=True, file_okay=False, path_type=Path))
@library_option
@server_options
@click.option("--no-browser", is_flag=True, help="Do not open a browser tab.")
@watch_options
def up(photos, library, host, port, no_browser, watch, poll):
    """Index PHOTOS (default: the 120 sample photos), then serve them.

    With the samples, half of the photos get their folder's name as a label, so the labelling
    queue has suggestions to show.
    """
    settings = settings_from(library=library, host=host, port=port)
    samples = photos is None
    report = run_index(settings, photos or SAMPLES).report
    click.echo(f"{report.summary()} -> {settings.library}")
    if samples:
        with open_library(settings) as lib:
            n = label_half_of_samples(lib)
        if n:
            click.echo(f"labelled {n} sample photos by their folder names; the rest await you")
    watching = {"watch": True, "poll": poll} if watch else {}
    run_server(settings, open_browser=not no_browser, **watching)


COMMANDS = [serve, up]
