"""The ``sandport`` command line.

``main()`` is the console-script entry point (``sandport = "sandport.cli:main"``); ``app`` is
the typer application, for embedding and for tests (``typer.testing.CliRunner``).
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from collections.abc import Sequence
from typing import Any, TextIO

import typer

from sandport.cli import output
from sandport.cli.app import app
from sandport.cli.errors import INTERRUPTED, USAGE

__all__ = ["app", "main"]


def _show_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: TextIO | None = None,
    line: str | None = None,
) -> None:
    output.warn(" ".join(str(message).split()))


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI with ``argv`` (default: ``sys.argv[1:]``) and return the exit code.

    Unlike typer's standalone mode, usage errors are reported as one line on stderr too.
    """
    if os.environ.get("SANDPORT_DEBUG", "") not in ("", "0"):
        logging.basicConfig(level=logging.DEBUG, format="sandport: %(name)s: %(message)s")
    else:
        warnings.showwarning = _show_warning
    args = list(sys.argv[1:] if argv is None else argv) or ["--help"]
    command = typer.main.get_command(app)
    try:
        result: Any = command.main(args=args, prog_name="sandport", standalone_mode=False)
    except typer.TyperException as exc:  # click's ClickException: usage errors and the like
        message = " ".join(exc.format_message().split())
        ctx = getattr(exc, "ctx", None)
        if exc.exit_code == USAGE and ctx is not None:
            message += f" (see: {ctx.command_path} --help)"
        output.error(message)
        return exc.exit_code
    except typer.Abort:
        return INTERRUPTED
    return result if isinstance(result, int) else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
