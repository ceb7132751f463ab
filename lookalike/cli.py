"""`lookalike`: the command line. Each command parses, builds Settings, calls one library function.

The commands live in one module per subject (cli_index, cli_search, cli_labels, cli_eval,
cli_duplicates, cli_learn, cli_web, cli_map, cli_tune); this module only makes the group and registers them.
"""

from __future__ import annotations

import atexit
import gc
import logging

import click

from lookalike import cli_duplicates, cli_eval, cli_index, cli_labels, cli_learn, cli_map, cli_search, cli_tune, cli_web


class Group(click.Group):
    """The command group; a library that cannot be written (read-only, locked, its disk full) ends
    in one line, not a traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except Exception as e:
            message = _one_line(e)
            if message is None:
                raise
            raise click.ClickException(message) from None


def _one_line(e: Exception) -> str | None:
    """What to say about a failure of the library's files that no command caught, or None."""
    import errno

    if type(e).__name__ == "OperationalError":  # sqlalchemy's: not imported before a command runs
        from indexer.library import READ_ONLY_MESSAGE, is_read_only_write

        if is_read_only_write(e):
            return READ_ONLY_MESSAGE
        reason = str(getattr(e, "orig", e))
        if "locked" in reason:
            return f"the library's database is locked by another process ({reason}): try again when it is done"
        if "disk" in reason or "full" in reason:
            return f"the library's database cannot be written ({reason}): is its disk full?"
    if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"no space left to write {e.filename or 'the library'}: free some disk space and run it again"
    if isinstance(e, PermissionError):
        return f"permission denied: {e.filename or e}: this user cannot write there"
    return None


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="Log what happens.")
@click.version_option(package_name="lookalike")
def main(verbose: bool) -> None:
    """lookalike: find similar photos and label them by their nearest neighbours."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # At exit, the interpreter's garbage-collector passes over every object still alive cost 0.2-0.5 s
    # once SQLAlchemy, FAISS and OpenVINO are loaded: frozen first, they are skipped (the process
    # is ending; files and connections are closed by the commands themselves).
    atexit.unregister(gc.freeze)
    atexit.register(gc.freeze)


for _module in (cli_index, cli_search, cli_labels, cli_eval, cli_duplicates, cli_learn, cli_web, cli_map, cli_tune):
    for _command in _module.COMMANDS:
        main.add_command(_command)

if __name__ == "__main__":
    main()
