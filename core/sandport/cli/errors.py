"""Exit codes and the translation of exceptions into one line on stderr plus an exit code."""

from __future__ import annotations

import functools
import os
import signal
import sys
import traceback
from collections.abc import Callable
from typing import ParamSpec, TypeVar

import pydantic
import typer

from sandport.cli import output
from sandport.errors import (
    CapabilityNotSupported,
    CommandTimedOut,
    PolicyDenied,
    ProviderNotFound,
    ProviderUnavailable,
    SandboxGone,
    SandboxNotFound,
    SandportError,
)

__all__ = [
    "EXIT_CODES_HELP",
    "ERROR",
    "INTERRUPTED",
    "NOT_FOUND",
    "OK",
    "PROVIDER",
    "TIMEOUT",
    "UNSUPPORTED",
    "USAGE",
    "Interrupted",
    "exit_code_for",
    "guarded",
    "report",
]

OK = 0
ERROR = 1
USAGE = 2
PROVIDER = 3
NOT_FOUND = 4
UNSUPPORTED = 5
TIMEOUT = 124
INTERRUPTED = 130

#: Shown in ``sandport --help`` (markdown).
EXIT_CODES_HELP = """\
**Exit codes:**
* **0** success
* **N** run, exec: the command's own exit code (128+N when killed by signal N)
* **1** a sandport error (provider error, file not found, ...)
* **2** usage error (bad option or argument, invalid spec)
* **3** provider not installed or not usable now
* **4** sandbox (or snapshot) not found, or gone
* **5** capability not supported by the provider, or denied by a policy plugin
* **124** run, exec: the command timed out and was killed
* **130** interrupted (Ctrl-C); the sandbox was still cleaned up

Errors are one line on stderr; set SANDPORT_DEBUG=1 for tracebacks."""

P = ParamSpec("P")
T = TypeVar("T")


class Interrupted(Exception):
    """A signal (Ctrl-C, SIGTERM, SIGHUP) stopped the command after its cleanup ran."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(f"interrupted by {signal.Signals(signum).name}")


def _leaf(exc: BaseException) -> BaseException:
    """The exception that matters inside (possibly nested) exception groups."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def exit_code_for(exc: BaseException) -> int:
    if isinstance(exc, ProviderNotFound | ProviderUnavailable):
        return PROVIDER
    if isinstance(exc, SandboxNotFound | SandboxGone):
        return NOT_FOUND
    if isinstance(exc, CapabilityNotSupported | PolicyDenied):
        return UNSUPPORTED
    if isinstance(exc, CommandTimedOut):
        return TIMEOUT
    if isinstance(exc, ValueError):  # pydantic.ValidationError too: an invalid spec or argument
        return USAGE
    if isinstance(exc, Interrupted):
        return 128 + exc.signum
    if isinstance(exc, KeyboardInterrupt):
        return INTERRUPTED
    return ERROR


def _describe(exc: BaseException) -> str:
    if isinstance(exc, pydantic.ValidationError):
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'value'}: {e['msg']}" for e in exc.errors(include_url=False)
        )
        return f"invalid {exc.title}: {problems}"
    if isinstance(exc, SandportError | ValueError | Interrupted):
        return str(exc) or type(exc).__name__
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted"
    if isinstance(exc, OSError):
        if exc.filename is not None and exc.strerror:
            return f"{exc.strerror}: {exc.filename}"
        return str(exc) or type(exc).__name__
    return f"unexpected {type(exc).__name__}: {exc} (set SANDPORT_DEBUG=1 for the traceback)"


def report(exc: BaseException) -> int:
    """Print ``exc`` as one line on stderr (a traceback first with ``SANDPORT_DEBUG=1``) and
    return the exit code it stands for."""
    leaf = _leaf(exc)
    if os.environ.get("SANDPORT_DEBUG", "") not in ("", "0"):
        traceback.print_exception(exc, file=sys.stderr)
    output.error(" ".join(_describe(leaf).split()))
    return exit_code_for(leaf)


def guarded(fn: Callable[P, T]) -> Callable[P, T]:
    """Wrap a command: sandport errors become one line on stderr and a documented exit code.

    Click's own exceptions (usage errors, ``typer.Exit``) pass through untouched, also when
    they come wrapped in an exception group from an async task group.
    """

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return fn(*args, **kwargs)
        except (typer.Exit, typer.TyperException, typer.Abort, SystemExit):
            raise
        except BaseException as exc:
            leaf = _leaf(exc)
            if isinstance(leaf, typer.Exit | typer.TyperException | typer.Abort):
                raise leaf from None
            if isinstance(leaf, BrokenPipeError):
                # Our reader went away (`sandport ... | head`): stop quietly, as a pipeline does.
                sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - lives until exit
                raise typer.Exit(128 + signal.SIGPIPE) from None
            raise typer.Exit(report(exc)) from None

    return wrapper
