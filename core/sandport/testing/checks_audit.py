"""Audit events and policy hooks, through a plugin registered for one check."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from sandport.audit import AuditEvent, PolicyRequest
from sandport.capabilities import Capability
from sandport.errors import CommandFailed, PolicyDenied
from sandport.hookspecs import hookimpl
from sandport.provider import Provider
from sandport.sandbox import Sandbox
from sandport.testing._support import Sandboxes
from sandport.testing.base import ConformanceBase

__all__ = ["AuditChecks"]


class Recorder:
    """A plugin that records every audit event and policy request, and can deny."""

    def __init__(self, deny: str | None = None, operation: str = "exec") -> None:
        self.events: list[AuditEvent] = []
        self.requests: list[PolicyRequest] = []
        self._deny = deny
        self._operation = operation

    @hookimpl
    def sandport_audit(self, event: AuditEvent) -> None:
        self.events.append(event)

    @hookimpl
    def sandport_check_policy(self, request: PolicyRequest) -> str | None:
        self.requests.append(request)
        return self._deny if request.operation == self._operation else None

    def ops(self, sandbox_id: str | None = None) -> list[str]:
        return [e.operation for e in self.events if sandbox_id is None or e.sandbox_id == sandbox_id]


@contextmanager
def recording(provider: Provider, recorder: Recorder | None = None) -> Iterator[Recorder]:
    recorder = recorder or Recorder()
    provider.plugins.register(recorder)
    try:
        yield recorder
    finally:
        provider.plugins.unregister(recorder)


class AuditChecks(ConformanceBase):
    async def test_audit_events_emitted(self, sandboxes: Sandboxes) -> None:
        with recording(sandboxes.provider) as rec:
            sandbox = await sandboxes.create()
            await sandbox.exec(["echo", "audited"])
            await sandbox.write_file("a.txt", "x")
            await sandbox.read_file("a.txt")
            await sandbox.list_dir(".")
            await sandbox.stat("a.txt")
            await sandbox.mkdir("d")
            await sandbox.remove("d")
            await sandbox.terminate()
        ops = rec.ops(sandbox.id)
        assert ops[0] == "create" and ops[-1] == "terminate", ops
        for name in ("exec", "write_file", "read_file", "list_dir", "stat", "mkdir", "remove"):
            assert ops.count(name) == 1, f"expected one {name!r} event in {ops}"
        for event in rec.events:
            if event.sandbox_id == sandbox.id:
                assert event.provider == sandbox.provider.name
                assert event.outcome == "ok", event
        exec_event = next(e for e in rec.events if e.operation == "exec")
        assert "audited" in exec_event.details["command"]
        assert exec_event.details["exit_code"] == 0

    async def test_audit_records_errors(self, sandbox: Sandbox) -> None:
        with recording(sandbox.provider) as rec, pytest.raises(FileNotFoundError):
            await sandbox.read_file("not-there")
        event = rec.events[-1]
        assert (event.operation, event.sandbox_id, event.outcome) == ("read_file", sandbox.id, "error")
        assert event.error and "FileNotFoundError" in event.error

    async def test_secrets_never_reach_audit(self, sandboxes: Sandboxes) -> None:
        secret = "sp-secret-" + secrets.token_hex(12)
        with recording(sandboxes.provider) as rec:
            sandbox = await sandboxes.create(secrets={"SP_API_KEY": secret}, env={"SP_PLAIN": "plain"})
            await sandbox.exec(f"echo {secret} > /dev/null", env={"SP_COPY": secret})
            await sandbox.exec(["test", secret, "=", "$SP_API_KEY"], env={"SP_OTHER": secret})
            with pytest.raises(CommandFailed) as failed:
                await sandbox.exec(f"test {secret} = wrong", check=True)
            with pytest.raises(CommandFailed) as printed:  # the error quotes stderr: redacted
                await sandbox.exec('echo "token: $SP_API_KEY" >&2; exit 1', check=True)
            await sandbox.write_file(f"dir-{secret}/file", "x")
            if Capability.SHELL in sandbox.provider.capabilities:
                async with await sandbox.open_shell() as shell:
                    assert (await shell.run(f'test "$SP_API_KEY" = {secret}')).exit_code == 0
            await sandbox.terminate()
        assert secret not in str(failed.value)
        assert "token: " in str(printed.value) and secret not in str(printed.value)
        dumped = [e.model_dump_json() for e in rec.events] + [r.model_dump_json() for r in rec.requests]
        assert len(rec.ops(sandbox.id)) >= 5
        leaked = [d for d in dumped if secret in d]
        assert not leaked, f"secret value in audit/policy data: {leaked[0][:300]}"

    async def test_policy_denial_runs_nothing(self, sandbox: Sandbox) -> None:
        reason = "conformance says no"
        with recording(sandbox.provider, Recorder(deny=reason)) as rec:
            with pytest.raises(PolicyDenied) as denied:
                await sandbox.exec("touch denied-marker")
            assert denied.value.reason == reason
            await sandbox.write_file("allowed.txt", "ok")  # other operations still run
        assert not await sandbox.exists("denied-marker"), "a denied command ran anyway"
        assert await sandbox.read_file("allowed.txt") == b"ok"
        event = next(e for e in rec.events if e.operation == "exec")
        assert (event.outcome, event.sandbox_id) == ("denied", sandbox.id)
        assert (await sandbox.exec(["true"])).exit_code == 0

    async def test_policy_can_deny_create_and_writes(self, sandboxes: Sandboxes) -> None:
        provider = sandboxes.provider
        before = {i.id for i in await provider.list()}
        with recording(provider, Recorder(deny="no sandboxes", operation="create")), pytest.raises(PolicyDenied):
            await sandboxes.create()
        assert {i.id for i in await provider.list()} == before, "a denied create left a sandbox behind"
        sandbox = await sandboxes.create()
        with recording(provider, Recorder(deny="read-only", operation="write_file")), pytest.raises(PolicyDenied):
            await sandbox.write_file("blocked.txt", "x")
        assert not await sandbox.exists("blocked.txt")
