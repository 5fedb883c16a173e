"""Audit events, policy requests and secret redaction.

Every operation on a provider or sandbox emits one :class:`AuditEvent` through the
``sandport_audit`` hook after it completes, and asks ``sandport_check_policy`` before it runs.
The details of both pass through a :class:`Redactor` first, so secret values never reach a
plugin, a log file or an error message.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shlex
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from sandport.hookspecs import hookimpl

__all__ = ["AuditEvent", "PolicyRequest", "Redactor", "audit_log_path"]

log = logging.getLogger("sandport.audit")

REDACTED = "[REDACTED]"
# Environment variable names whose values are treated as secrets even if passed in ``env``.
_SECRET_NAME = re.compile(r"(TOKEN|SECRET|PASSWORD|PASSWD|API_?KEY|PRIVATE_?KEY|CREDENTIAL)", re.I)


def _now() -> datetime:
    return datetime.now(UTC)


class PolicyRequest(BaseModel):
    """An operation about to run, as shown to ``sandport_check_policy``."""

    model_config = ConfigDict(frozen=True)

    operation: str
    provider: str
    sandbox_id: str | None = None
    details: dict[str, Any] = Field(default_factory=dict)


class AuditEvent(BaseModel):
    """One completed operation, as shown to ``sandport_audit``."""

    model_config = ConfigDict(frozen=True)

    time: datetime = Field(default_factory=_now)
    operation: str
    provider: str
    sandbox_id: str | None = None
    outcome: Literal["ok", "error", "denied"] = "ok"
    error: str | None = None
    duration: float = 0.0
    details: dict[str, Any] = Field(default_factory=dict)


def _spellings(secret: str) -> set[str]:
    """A secret as it may appear in text: raw, inside shell single quotes (where each ``'``
    becomes ``'"'"'``) and inside a JSON string."""
    return {secret, secret.replace("'", "'\"'\"'"), json.dumps(secret)[1:-1]}


class Redactor:
    """Replaces known secret values (and values of secret-looking env names) in data."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        # Longest first, so a secret containing another is replaced whole.
        self._secrets = sorted({form for s in secrets if s for form in _spellings(s)}, key=len, reverse=True)

    def text(self, value: str) -> str:
        for secret in self._secrets:
            value = value.replace(secret, REDACTED)
        return value

    def command(self, cmd: str | Sequence[str]) -> str:
        """Render a command for logs and errors: a string as is, an argv shell-quoted, with
        each argument redacted *before* quoting (quoting could split a secret apart)."""
        if isinstance(cmd, str):
            return self.text(cmd)
        return shlex.join(self.text(str(arg)) for arg in cmd)

    def env(self, env: Mapping[str, str]) -> dict[str, str]:
        return {k: REDACTED if _SECRET_NAME.search(k) else self.text(v) for k, v in env.items()}

    def value(self, value: Any) -> Any:
        """Redact recursively through dicts, lists and strings; other values pass through."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, bytes):
            return self.text(value.decode("utf-8", "replace"))
        if isinstance(value, Mapping):
            if "env" in value and isinstance(value["env"], Mapping):
                value = {**value, "env": self.env(value["env"])}
            return {str(k): self.value(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.value(v) for v in value]
        return value


def audit_log_path() -> Path | None:
    """Where the JSONL audit log goes: ``$SANDPORT_AUDIT_LOG``, ``off`` to disable, else
    ``$XDG_STATE_HOME/sandport/audit.jsonl``."""
    configured = os.environ.get("SANDPORT_AUDIT_LOG")
    if configured is not None:
        return None if configured.lower() in ("", "off", "0", "false") else Path(configured)
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "sandport" / "audit.jsonl"


@hookimpl
def sandport_audit(event: AuditEvent) -> None:
    """Default plugin: append each event as one JSON line to :func:`audit_log_path` (0600)."""
    path = audit_log_path()
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps(event.model_dump(mode="json"), separators=(",", ":")) + "\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)
