"""The `geochange` command line: one click group, one module per command.

Commands are thin: parse options, call the library, report. A :class:`GeochangeError` is printed
as one line on stderr, never as a traceback, with exit status 2 for a user's mistake and 1 for a
fault of the machine (:class:`RunEnvironmentError`: disk full, output locked by another run).
SIGTERM stops a run as Ctrl-C does: outputs being written are dropped, earlier ones kept, and
the finished chunks stay for ``detect --resume``.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import signal
import sys
import threading

import click

from geochange._version import __version__
from geochange.config import ConfigError
from geochange.errors import GeochangeError, RunEnvironmentError

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
@click.pass_context
def cli(ctx: click.Context, verbose: int, quiet: bool) -> None:
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
    ctx.obj = {"quiet": quiet}


class _Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so that every cleanup runs."""


def _terminate(signum: int, frame: object) -> None:
    raise _Terminated()


@contextlib.contextmanager
def _sigterm_as_interrupt():
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def _stopped(exc: BaseException | None, what: str) -> str:
    """The line for a stopped run, with what was kept for --resume (a note on the exception)."""
    notes = getattr(exc, "__notes__", None) or []
    kept = "; ".join(" ".join(n.split()) for n in notes)
    return f"{what}; outputs of this run were not published" + (f"; {kept}" if kept else ".")


def main(argv: list[str] | None = None) -> None:
    """Entry point of the `geochange` script."""
    try:
        with _sigterm_as_interrupt():
            cli.main(args=argv, prog_name="geochange", standalone_mode=False)
    except ConfigError as exc:  # named by its flag, not by its configuration field
        click.echo(f"Error: {_one_line(exc.for_flag())}", err=True)
        sys.exit(2)
    except RunEnvironmentError as exc:
        click.echo(f"Error: {_one_line(exc)}", err=True)
        sys.exit(1)
    except GeochangeError as exc:
        click.echo(f"Error: {_one_line(exc)}", err=True)
        sys.exit(2)
    except click.exceptions.Abort as exc:
        if isinstance(exc.__context__, _Terminated):
            click.echo(_stopped(exc.__context__, "Terminated (SIGTERM)"), err=True)
            sys.exit(143)
        if isinstance(exc.__context__, KeyboardInterrupt):
            click.echo(_stopped(exc.__context__, "Aborted (Ctrl-C)"), err=True)
            sys.exit(1)
        click.echo("Aborted.", err=True)
        sys.exit(1)
    except _Terminated as exc:
        click.echo(_stopped(exc, "Terminated (SIGTERM)"), err=True)
        sys.exit(143)
    except click.UsageError as exc:  # one line, like every other refusal
        where = f" (see '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
        click.echo(f"Error: {_one_line(exc.format_message())}{where}", err=True)
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
