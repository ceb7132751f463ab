"""`lookalike`: the command line. Each command parses, builds Settings, calls one library function.

The commands live in one module per subject (cli_index, cli_search, cli_labels, cli_eval,
cli_duplicates, cli_learn, cli_web, cli_map, cli_tune); this module only makes the group and registers them.
"""

from __future__ import annotations

import logging

import click

from lookalike import cli_duplicates, cli_eval, cli_index, cli_labels, cli_learn, cli_map, cli_search, cli_tune, cli_web


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="Log what happens.")
@click.version_option(package_name="lookalike")
def main(verbose: bool) -> None:
    """lookalike: find similar photos and label them by their nearest neighbours."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


for _module in (cli_index, cli_search, cli_labels, cli_eval, cli_duplicates, cli_learn, cli_web, cli_map, cli_tune):
    for _command in _module.COMMANDS:
        main.add_command(_command)

if __name__ == "__main__":
    main()
