"""The ``semid`` command line: a thin typer app over the library.

Each command group lives in its own module (``fit.py``: fit, ``core.py``: assign/stats/report, ``data.py``: data stats,
``embed.py``: embed, ``demo.py``: demo) and registers itself on :data:`app`. User mistakes raise
:class:`semid.SemidError`; :func:`main` prints them as one ``Error: ...`` line and exits with status 1.
"""

from __future__ import annotations

import os
import signal
import sys
import threading

import typer

from semid.errors import SemidError

app = typer.Typer(
    name="semid",
    help="Semantic IDs for generative recommendation.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _register() -> None:
    # Importing a module registers its commands on `app`.
    # fit first, so that `semid --help` lists it before assign, stats and report
    for module in ("fit", "core"):
        __import__(f"semid.cli.{module}")

    for optional in ("data", "embed", "demo", "rec", "llm", "serve"):
        try:
            __import__(f"semid.cli.{optional}")
        except ModuleNotFoundError as e:  # a command group whose module is not there yet
            if e.name != f"semid.cli.{optional}":
                raise


def main(argv: list[str] | None = None) -> None:
    """Console entry point: run the app, turning :class:`SemidError` into one line and exit status 1.

    Usage errors (unknown option, missing argument) are handled by typer: a message and exit status 2.
    Set ``SEMID_DEBUG=1`` to see the traceback behind an ``Error:`` line. A rank of a torchrun job ends
    through :func:`semid._distributed.exit_rank`, which skips a torch race at interpreter exit.
    """
    try:
        _run(argv)
    except SystemExit as e:
        ranks = sys.modules.get("semid._distributed")  # not imported: no process group (and no torch import)
        if ranks is not None and ranks.started_here():  # a torchrun rank: leave without finalization
            if isinstance(e.code, str):
                print(e.code, file=sys.stderr)
            ranks.exit_rank(e.code if isinstance(e.code, int) else int(e.code is not None))
        raise


def _run(argv: list[str] | None) -> None:
    _register()
    previous = _raise_on_sigterm()
    try:
        app(args=argv, prog_name="semid")
    except SemidError as e:
        if os.environ.get("SEMID_DEBUG"):
            raise
        print(f"Error: {e}", file=sys.stderr)
        sys.exit(1)
    except FileNotFoundError as e:
        if os.environ.get("SEMID_DEBUG"):
            raise
        print(f"Error: {e.filename or e}: no such file", file=sys.stderr)
        sys.exit(1)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _raise_on_sigterm() -> signal.Handlers | None:
    """Make SIGTERM unwind like Ctrl-C (typer then exits with status 130), so temporary outputs are
    cleaned up: ``kill`` or a job scheduler stopping the command must not leave half-written files.
    Returns the handler to restore."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def handler(signum: int, frame: object) -> None:
        sys.unraisablehook = _quiet_unraisable
        raise KeyboardInterrupt

    return signal.signal(signal.SIGTERM, handler)


def _quiet_unraisable(unraisable: object) -> None:
    """The unraisable-exception hook once the command was told to stop: an object the interrupt cut off
    half-built (a progress bar inside its ``__init__``) may fail in ``__del__``, and Python would print that
    as a traceback after the clean "Aborted!"; it is teardown noise, not the user's business."""


def get_app() -> typer.Typer:
    """The fully registered app (for ``typer.testing.CliRunner`` in tests)."""
    _register()
    return app
