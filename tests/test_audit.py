"""The JSONL audit log plugin and secret redaction."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import sandport
from sandport.audit import REDACTED, Redactor, audit_log_path
from sandport.local import LocalProvider


def test_redactor_replaces_secret_values_and_secret_named_env() -> None:
    redactor = Redactor(["s3cret", "s3cret-longer"])
    data = {"command": "echo s3cret-longer s3cret", "env": {"API_KEY": "abc", "PLAIN": "x s3cret"}, "n": 3}
    out = redactor.value(data)
    assert out == {
        "command": f"echo {REDACTED} {REDACTED}",
        "env": {"API_KEY": REDACTED, "PLAIN": f"x {REDACTED}"},
        "n": 3,
    }


def test_audit_log_path_honours_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SANDPORT_AUDIT_LOG", "off")
    assert audit_log_path() is None
    monkeypatch.setenv("SANDPORT_AUDIT_LOG", str(tmp_path / "a.jsonl"))
    assert audit_log_path() == tmp_path / "a.jsonl"
    monkeypatch.delenv("SANDPORT_AUDIT_LOG")
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    assert audit_log_path() == tmp_path / "state" / "sandport" / "audit.jsonl"


def test_jsonl_audit_log_records_operations_without_secrets(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    monkeypatch.setenv("SANDPORT_AUDIT_LOG", str(log))
    provider = LocalProvider(root=tmp_path / "root")
    with sandport.open(provider, secrets={"DB_PASSWORD": "pa55-w0rd-xyz"}) as sb:
        sb.exec("echo pa55-w0rd-xyz > f; exit 3")
        sb.write_file("notes.txt", "hi")
        with pytest.raises(FileNotFoundError):
            sb.read_file("missing")
    text = log.read_text()
    assert "pa55-w0rd-xyz" not in text
    events = [json.loads(line) for line in text.splitlines()]
    ops = [e["operation"] for e in events]
    assert ops == ["create", "exec", "write_file", "read_file", "terminate"]
    exec_event = events[1]
    assert exec_event["details"]["exit_code"] == 3 and REDACTED in exec_event["details"]["command"]
    assert events[3]["outcome"] == "error" and "FileNotFoundError" in events[3]["error"]
    assert {e["sandbox_id"] for e in events} == {events[0]["sandbox_id"]}
    assert events[0]["details"]["secrets"] == ["DB_PASSWORD"]
    assert log.stat().st_mode & 0o777 == 0o600
