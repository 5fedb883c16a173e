"""Secrets never reach audit events, policy requests or error messages (issue 12, item 7).

Each check runs the attack the review found: a secret that quoting splits apart (``'``), or
one passed to ``restore(secrets=...)``, and then looks for the value in everything a
plugin or the caller is shown.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import sandport
from sandport.audit import AuditEvent, PolicyRequest
from sandport.errors import CommandFailed
from sandport.hookspecs import hookimpl
from sandport.local import LocalProvider
from sandport.plugins import get_plugin_manager

SECRETS = {
    "QUOTE": "it's-a-s3cret",
    "SPACES": "three word secret",
    "NEWLINE": "line-one\nline-two-s3cret",
    "UNICODE": "pässwörd-秘密-🔑",
    "SHELLY": "a'b\"c$d`e\\f",
}


class _Recorder:
    """A plugin that keeps every audit event and policy request it is shown."""

    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []

    @hookimpl
    def sandport_audit(self, event: AuditEvent) -> None:
        self.seen.append(event.model_dump(mode="json"))

    @hookimpl
    def sandport_check_policy(self, request: PolicyRequest) -> str | None:
        self.seen.append(request.model_dump(mode="json"))
        return None

    def text(self) -> str:
        return json.dumps(self.seen, ensure_ascii=False)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def recorder() -> Iterator[_Recorder]:
    plugin = _Recorder()
    manager = get_plugin_manager()
    manager.register(plugin)
    try:
        yield plugin
    finally:
        manager.unregister(plugin)


def _assert_no_secret(text: str) -> None:
    for name, value in SECRETS.items():
        for piece in (value, *value.split("'"), *value.splitlines()):
            if len(piece) >= 6:
                assert piece not in text, f"secret {name} leaked: {piece!r} in {text[:300]!r}"


def test_argv_secrets_are_redacted_before_quoting(recorder: _Recorder, tmp_path: Path) -> None:
    provider = LocalProvider(root=tmp_path / "root")
    with sandport.open(provider, secrets=SECRETS) as sb:
        argv = ["sh", "-c", 'echo "$1" >&2; exit 3', "sh", *SECRETS.values()]
        result = sb.exec(argv)
        assert result.exit_code == 3
        with pytest.raises(CommandFailed) as failed:
            sb.exec(argv, check=True)
        with pytest.raises(CommandFailed) as failed_text:
            sb.exec(f"echo '{SECRETS['UNICODE']}' >&2; false", check=True)
        sb.start(["echo", SECRETS["QUOTE"], SECRETS["NEWLINE"]]).wait()
    _assert_no_secret(str(failed.value))
    _assert_no_secret(str(failed_text.value))
    _assert_no_secret(recorder.text())
    assert any("[REDACTED]" in str(e.get("details", {}).get("command")) for e in recorder.seen)


@pytest.mark.anyio
async def test_restore_secrets_are_redacted(recorder: _Recorder, tmp_path: Path) -> None:
    provider = LocalProvider(root=tmp_path / "root")
    async with await provider.create() as sb:
        await sb.write_file("f.txt", "data")
        ref = await sb.snapshot()
    async with await provider.restore(ref, secrets=SECRETS) as restored:
        assert (await restored.exec(["printenv", "QUOTE"])).stdout == SECRETS["QUOTE"].encode() + b"\n"
    restore_events = [e for e in recorder.seen if e.get("operation") == "restore"]
    assert len(restore_events) == 2, "restore should show one policy request and one audit event"
    assert all(sorted(e["details"]["secrets"]) == sorted(SECRETS) for e in restore_events)
    _assert_no_secret(recorder.text())
