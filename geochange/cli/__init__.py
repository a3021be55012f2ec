"""The `geochange` command line: one click group, one module per command.

Commands are thin: parse options, call the library, report. A :class:`GeochangeError` (a user
mistake) is printed as one line on stderr with exit status 2, never as a traceback.
"""

from __future__ import annotations

import importlib
import logging
import sys

import click

from geochange._version import __version__
from geochange.config import ConfigError
from geochange.errors import GeochangeError

__all__ = ["main", "cli"]

# command name -> module under geochange.cli defining a click command called `command`.
_COMMANDS = {
    "adapt": "adapt",
    "calibrate": "calibrate",
    "detect": "detect",
    "evaluate": "evaluate",
    "info": "info",
    "series": "series",
    "synth": "synth",
    "train": "train",
}


class _LazyGroup(click.Group):
    """Imports a command's module only when that command runs (torch is slow to import)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(name for name, mod in _COMMANDS.items() if _module_exists(mod))

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in _COMMANDS or not _module_exists(_COMMANDS[name]):
            return None
        module = importlib.import_module(f"geochange.cli.{_COMMANDS[name]}")
        return module.command


def _module_exists(name: str) -> bool:
    return importlib.util.find_spec(f"geochange.cli.{name}") is not None


@click.group(cls=_LazyGroup)
@click.version_option(__version__, prog_name="geochange")
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
@click.option("-q", "--quiet", is_flag=True, help="Only errors.")
def cli(verbose: int, quiet: bool) -> None:
    """Change detection for satellite image time series.

    \b
    Examples:
      geochange info data_samples/stack/*.tif
      geochange detect data_samples/stack -o changes.gpkg
      geochange evaluate changes.gpkg data_samples/truth/label.tif
    """
    level = (
        logging.ERROR if quiet else [logging.WARNING, logging.INFO, logging.DEBUG][min(verbose, 2)]
    )
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")


def main(argv: list[str] | None = None) -> None:
    """Entry point of the `geochange` script."""
    try:
        cli.main(args=argv, prog_name="geochange", standalone_mode=False)
    except ConfigError as exc:  # named by its flag, not by its configuration field
        click.echo(f"Error: {exc.for_flag()}", err=True)
        sys.exit(2)
    except GeochangeError as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(2)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(1)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
