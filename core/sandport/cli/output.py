"""Rendering: JSON on stdout, rich tables for people, one-line messages on stderr."""

from __future__ import annotations

import base64
import json
import sys
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, Literal

from rich.console import Console
from rich.table import Table
from rich.text import Text

from sandport.models import ExecResult, SandboxInfo
from sandport.provider import LABEL_CREATED, LABEL_CREATOR, LABEL_OWNER

__all__ = [
    "emit_json",
    "error",
    "exec_result_json",
    "human_age",
    "human_bytes",
    "info_json",
    "note",
    "sandbox_table",
    "stderr_console",
    "stdout_console",
    "warn",
    "write_output",
]

# Consoles resolve sys.stdout/sys.stderr at print time, so test runners that swap them work.
# soft_wrap: a message is one line however narrow the terminal.
_out = Console(highlight=False, soft_wrap=True)
_err = Console(stderr=True, highlight=False, soft_wrap=True)

#: Labels sandport sets on every sandbox; hidden from the ``ls`` table (kept in JSON).
_BOOKKEEPING = (LABEL_OWNER, LABEL_CREATED, LABEL_CREATOR)


def stdout_console() -> Console:
    return _out


def stderr_console() -> Console:
    return _err


def emit_json(value: Any) -> None:
    """Print ``value`` as JSON on stdout (not through rich, so nothing is wrapped or styled)."""
    sys.stdout.write(json.dumps(value, indent=2, default=str, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def _message(prefix: str, style: str, text: str) -> None:
    _err.print(Text.assemble(("sandport: ", "bold"), (prefix, style), text))


def error(text: str) -> None:
    """One line on stderr: ``sandport: error: ...``."""
    _message("error: ", "bold red", text)


def warn(text: str) -> None:
    _message("warning: ", "bold yellow", text)


def note(text: str) -> None:
    _message("", "", text)


def write_output(stream: Literal["stdout", "stderr"], data: bytes) -> None:
    """Write a process's raw output bytes to our own stdout or stderr, and flush at once."""
    target = sys.stdout if stream == "stdout" else sys.stderr
    buffer = getattr(target, "buffer", None)
    if buffer is not None:
        target.flush()
        buffer.write(data)
        buffer.flush()
    else:  # a text-only stream (some embedding replaced sys.stdout)
        target.write(data.decode("utf-8", "replace"))
        target.flush()


def human_bytes(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"  # pragma: no cover - unreachable


def human_age(created_at: datetime, now: datetime | None = None) -> str:
    seconds = max(0, int(((now or datetime.now(UTC)) - created_at).total_seconds()))
    for unit, length in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= length:
            return f"{seconds // length}{unit}"
    return f"{seconds}s"


def _bytes_field(data: bytes) -> dict[str, str]:
    try:
        return {"text": data.decode("utf-8")}
    except UnicodeDecodeError:
        return {"text": data.decode("utf-8", "replace"), "base64": base64.b64encode(data).decode()}


def exec_result_json(result: ExecResult, **extra: Any) -> dict[str, Any]:
    """An ExecResult for ``--json``: text fields, plus ``*_base64`` when output is not UTF-8."""
    out, err = _bytes_field(result.stdout), _bytes_field(result.stderr)
    data: dict[str, Any] = {
        **extra,
        "exit_code": result.exit_code,
        "timed_out": result.timed_out,
        "truncated": result.truncated,
        "duration": round(result.duration, 3),
        "stdout": out["text"],
        "stderr": err["text"],
    }
    if "base64" in out:
        data["stdout_base64"] = out["base64"]
    if "base64" in err:
        data["stderr_base64"] = err["base64"]
    for key in ("interrupted", "restarted"):
        if hasattr(result, key):
            data[key] = getattr(result, key)
    return data


def info_json(info: SandboxInfo, now: datetime | None = None) -> dict[str, Any]:
    data = info.model_dump(mode="json")
    data["age_seconds"] = max(0, int(((now or datetime.now(UTC)) - info.created_at).total_seconds()))
    return data


def _labels_text(labels: Mapping[str, str]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(labels.items()) if k not in _BOOKKEEPING)


def sandbox_table(infos: Iterable[SandboxInfo]) -> Table:
    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in ("ID", "PROVIDER", "STATE", "AGE", "ISOLATION", "LABELS"):
        table.add_column(column, overflow="fold")
    now = datetime.now(UTC)
    for info in infos:
        isolation = Text(info.isolation, style="bold red" if info.isolation == "none" else "")
        table.add_row(
            info.id, info.provider, info.state, human_age(info.created_at, now), isolation, _labels_text(info.labels)
        )
    return table
