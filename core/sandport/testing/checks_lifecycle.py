"""Lifecycle: terminate, SandboxGone, connect, list, info, invalid specs, lifetime."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import pydantic
import pytest

from sandport.capabilities import Capability
from sandport.errors import SandboxGone, SandboxNotFound
from sandport.provider import Provider
from sandport.sandbox import Sandbox
from sandport.testing._support import Sandboxes, requires
from sandport.testing.base import ConformanceBase

__all__ = ["LifecycleChecks"]

Op = Callable[[Sandbox, Path], Awaitable[Any]]
OPERATIONS: dict[str, tuple[Capability | None, Op]] = {
    "exec": (None, lambda sb, _: sb.exec(["true"])),
    "start": (Capability.STREAMING, lambda sb, _: sb.start(["true"])),
    "open_shell": (Capability.SHELL, lambda sb, _: sb.open_shell()),
    "read_file": (None, lambda sb, _: sb.read_file("f.txt")),
    "write_file": (None, lambda sb, _: sb.write_file("f.txt", "x")),
    "list_dir": (None, lambda sb, _: sb.list_dir(".")),
    "stat": (None, lambda sb, _: sb.stat("f.txt")),
    "mkdir": (None, lambda sb, _: sb.mkdir("d")),
    "remove": (None, lambda sb, _: sb.remove("f.txt")),
    "upload": (None, lambda sb, tmp: sb.upload(tmp, "up")),
    "download": (None, lambda sb, tmp: sb.download("f.txt", tmp / "down")),
    "snapshot": (Capability.SNAPSHOT, lambda sb, _: sb.snapshot()),
}


async def ids(provider: Provider) -> set[str]:
    return {info.id for info in await provider.list()}


class LifecycleChecks(ConformanceBase):
    async def test_terminate_is_idempotent(self, sandbox: Sandbox) -> None:
        await sandbox.terminate()
        await sandbox.terminate()
        assert (await sandbox.info()).state == "terminated"

    @pytest.mark.parametrize("operation", list(OPERATIONS))
    async def test_operations_after_terminate_raise_gone(
        self, sandboxes: Sandboxes, tmp_path: Path, operation: str
    ) -> None:
        capability, op = OPERATIONS[operation]
        if capability is not None and capability not in sandboxes.provider.capabilities:
            pytest.skip(f"{sandboxes.provider.name} lacks capability {capability.value}")
        sandbox = await sandboxes.create()
        await sandbox.write_file("f.txt", "x")
        await sandbox.terminate()
        with pytest.raises(SandboxGone):
            await op(sandbox, tmp_path)

    async def test_terminated_elsewhere_is_gone(self, sandbox: Sandbox) -> None:
        other = self.make_provider()
        try:
            await (await other.connect(sandbox.id)).terminate()
        finally:
            await other.aclose()
        with pytest.raises(SandboxGone):
            await sandbox.exec(["true"])
        with pytest.raises(SandboxGone):
            await sandbox.read_file("anything")
        with pytest.raises((SandboxNotFound, SandboxGone)):
            await sandbox.provider.connect(sandbox.id)

    @requires(Capability.STREAMING)
    async def test_terminated_during_a_command_is_gone(self, sandbox: Sandbox) -> None:
        """A command whose sandbox is terminated under it ends with SandboxGone, not a hang
        or an invented exit code."""
        process = await sandbox.start(["sh", "-c", "echo started; sleep 300"])
        async for chunk in process:
            assert chunk.data.startswith(b"started")
            break
        other = self.make_provider()
        try:
            await (await other.connect(sandbox.id)).terminate()
        finally:
            await other.aclose()
        with anyio.fail_after(self.slack), pytest.raises(SandboxGone):
            await process.wait()

    async def test_connect_by_id_from_another_instance(self, sandboxes: Sandboxes) -> None:
        sandbox = await sandboxes.create(env={"SP_ENV": "e"}, secrets={"SP_SECRET": "s"}, labels={"sp-c": "1"})
        await sandbox.write_file("shared.txt", "from the first instance")
        other = self.make_provider()
        try:
            again = await other.connect(sandbox.id)
            assert again.id == sandbox.id
            assert (await again.info()).labels["sp-c"] == "1"
            assert (await again.exec(["sh", "-c", 'echo "$SP_ENV $SP_SECRET"'])).stdout == b"e s\n"
            assert await again.read_file("shared.txt") == b"from the first instance"
            assert (await again.exec(["cat", "shared.txt"])).stdout == b"from the first instance"
            await again.write_file("back.txt", "from the second")
        finally:
            await other.aclose()
        assert await sandbox.read_file("back.txt") == b"from the second"

    async def test_connect_unknown_id(self, provider: Provider) -> None:
        for bogus in ("sp-does-not-exist-0000", "../../etc", "nonexistent"):
            with pytest.raises(SandboxNotFound):
                await provider.connect(bogus)

    async def test_list_by_labels(self, sandboxes: Sandboxes) -> None:
        tag = uuid.uuid4().hex
        mine = await sandboxes.create(labels={"suite": tag})
        await sandboxes.create(labels={"suite": "someone-else"})
        found = await sandboxes.provider.list(labels={"suite": tag})
        assert [i.id for i in found] == [mine.id]
        assert found[0].labels["suite"] == tag
        await mine.terminate()
        assert await sandboxes.provider.list(labels={"suite": tag}) == []

    async def test_info(self, sandboxes: Sandboxes) -> None:
        before = datetime.now(UTC) - timedelta(minutes=5)
        sandbox = await sandboxes.create(labels={"sp-info": "yes"})
        info = await sandbox.info()
        assert info.id == sandbox.id
        assert info.provider == sandbox.provider.name == self.make_provider().name
        assert info.state == "running"
        assert info.labels["sp-info"] == "yes"
        assert before <= info.created_at <= datetime.now(UTC) + timedelta(minutes=5)
        assert info.workdir == sandbox.spec.workdir
        assert info.network == sandbox.spec.network.mode
        assert info.isolation, "isolation names the mechanism, or 'none'"
        await sandbox.terminate()
        assert (await sandbox.info()).state == "terminated"

    @pytest.mark.parametrize(
        ("fields", "field"),
        [
            ({"no_such_field": 1}, "no_such_field"),
            ({"resources": {"memory_mb": -1}}, "memory_mb"),
            ({"network": "wifi"}, "network"),
            ({"options": {"sandport_bogus_option": 1}}, "sandport_bogus_option"),
        ],
        ids=["unknown-field", "negative-memory", "unknown-network", "unknown-option"],
    )
    async def test_invalid_spec_rejected(self, sandboxes: Sandboxes, fields: dict[str, Any], field: str) -> None:
        provider = sandboxes.provider
        before = await ids(provider)
        with pytest.raises(pydantic.ValidationError) as error:
            await provider.create(**sandboxes.fields(**fields))
        assert field in str(error.value)
        assert await ids(provider) == before, "a failed create left a sandbox behind"

    async def test_async_context_manager_terminates(self, sandboxes: Sandboxes) -> None:
        async with await sandboxes.create() as sandbox:
            await sandbox.write_file("x", "y")
        with pytest.raises(SandboxGone):
            await sandbox.exec(["true"])
        assert sandbox.id not in await ids(sandboxes.provider)

    async def test_custom_workdir(self, sandboxes: Sandboxes) -> None:
        sandbox = await sandboxes.create(workdir="/home/agent/project")
        assert (await sandbox.exec(["pwd"])).stdout == b"/home/agent/project\n"
        await sandbox.write_file("here.txt", "x")
        assert (await sandbox.exec(["cat", "/home/agent/project/here.txt"])).stdout == b"x"

    @requires(Capability.LIFETIME)
    async def test_lifetime_ends_the_sandbox(self, sandboxes: Sandboxes) -> None:
        sandbox = await sandboxes.create(lifetime=2)
        try:
            with anyio.fail_after(self.slack):
                result = await sandbox.exec(["sleep", "120"])
            assert result.timed_out, "a command outliving the sandbox ends with it"
        except SandboxGone:
            pass
        with anyio.fail_after(self.slack):
            while True:
                try:
                    await sandbox.exec(["true"])
                except SandboxGone:
                    break
                await anyio.sleep(0.5)

    async def test_gc_spares_live_sandboxes(self, sandbox: Sandbox) -> None:
        """gc() only takes sandboxes whose creating process is gone: this one's is alive."""
        removed = await sandbox.provider.gc()
        assert sandbox.id not in removed
        assert (await sandbox.exec(["true"])).exit_code == 0
