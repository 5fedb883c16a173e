"""Parsing of the CLI's option values (``K=V`` pairs, durations) and the shared option types."""

from __future__ import annotations

import os
import re
from typing import Annotated

import typer

__all__ = [
    "JsonOpt",
    "ProviderOpt",
    "parse_duration",
    "parse_env",
    "parse_pairs",
]

#: ``--provider``, defaulting to ``$SANDPORT_PROVIDER`` and then ``local``.
ProviderOpt = Annotated[
    str,
    typer.Option(
        "--provider",
        "-p",
        envvar="SANDPORT_PROVIDER",
        metavar="NAME",
        help="Provider to use (see `sandport providers`).",
    ),
]
#: ``--json`` on every command.
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON on stdout.")]

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$", re.IGNORECASE)
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}


def parse_duration(text: str, *, option: str) -> float:
    """``90``, ``1.5``, ``30s``, ``30m``, ``1h``, ``2d``, ``1w`` -> seconds.

    Raises:
        typer.BadParameter: anything else (the CLI exits with code 2).
    """
    match = _DURATION.match(text)
    if match is None:
        raise typer.BadParameter(
            f"{text!r} is not a duration; use seconds (90) or a number with a unit: 30s, 30m, 1h, 2d",
            param_hint=option,
        )
    return float(match.group(1)) * _UNITS[(match.group(2) or "s").lower()]


def parse_pairs(values: list[str] | None, *, option: str) -> dict[str, str]:
    """``["K=V", ...]`` -> ``{"K": "V"}``; the value may be empty or contain ``=``."""
    pairs: dict[str, str] = {}
    for item in values or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"{item!r} is not KEY=VALUE", param_hint=option)
        pairs[key] = value
    return pairs


def parse_env(values: list[str] | None, *, option: str) -> dict[str, str]:
    """Like :func:`parse_pairs`, but a bare ``NAME`` takes its value from this process's
    environment (as ``docker run -e NAME`` does), which keeps secrets off the command line."""
    pairs: dict[str, str] = {}
    for item in values or []:
        key, sep, value = item.partition("=")
        if not key:
            raise typer.BadParameter(f"{item!r} is not NAME=VALUE or NAME", param_hint=option)
        if not sep:
            if key not in os.environ:
                raise typer.BadParameter(
                    f"{key} has no value: give NAME=VALUE, or set {key} in the environment", param_hint=option
                )
            value = os.environ[key]
        pairs[key] = value
    return pairs
