"""Capability declarations: what is declared works, what is not is refused by name."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import pytest

from sandport.capabilities import Capability
from sandport.errors import CapabilityNotSupported
from sandport.models import OutputChunk, Resources
from sandport.process import Process
from sandport.sandbox import Sandbox
from sandport.sync import SyncProvider
from sandport.testing._support import Sandboxes, requires
from sandport.testing.base import ConformanceBase

__all__ = ["CapabilityChecks"]

# Capability -> an operation on a running sandbox that needs it.
SANDBOX_ACTIONS: dict[Capability, Callable[[Sandbox], Awaitable[Any]]] = {
    Capability.PAUSE: lambda sb: sb.pause(),
    Capability.SNAPSHOT: lambda sb: sb.snapshot(),
    Capability.SHELL: lambda sb: sb.open_shell(),
    Capability.STREAMING: lambda sb: sb.start(["true"]),
    Capability.STDIN: lambda sb: sb.exec(["cat"], stdin=b"x"),
    Capability.USER: lambda sb: sb.exec(["true"], user="nobody"),
}
# Capability -> spec fields that need it.
SPEC_FIELDS: dict[Capability, dict[str, Any]] = {
    Capability.PORTS: {"ports": [8080]},
    Capability.RESOURCE_LIMITS: {"resources": Resources(memory_mb=256)},
    Capability.LIFETIME: {"lifetime": 600},
    Capability.NETWORK_OPEN: {"network": "open"},
    Capability.IMAGES: {"image": "sandport-conformance:nonexistent"},
}


async def _next_chunk(process: Process, timeout: float) -> OutputChunk | None:
    """The next output chunk, or None if none arrives within ``timeout`` seconds."""
    with anyio.move_on_after(timeout):
        return await anext(aiter(process))
    return None


class CapabilityChecks(ConformanceBase):
    async def test_capabilities_declared(self, provider: Any) -> None:
        assert provider.name == (self.provider_name or provider.name)
        assert isinstance(provider.capabilities, frozenset)
        assert all(isinstance(c, Capability) for c in provider.capabilities)
        assert provider.capabilities & {Capability.NETWORK_NONE, Capability.NETWORK_OPEN}, "no network mode at all"

    @pytest.mark.parametrize("capability", list(SANDBOX_ACTIONS), ids=[c.value for c in SANDBOX_ACTIONS])
    async def test_missing_capability_refused(self, sandboxes: Sandboxes, capability: Capability) -> None:
        if capability in sandboxes.provider.capabilities:
            pytest.skip(f"{sandboxes.provider.name} declares {capability.value}")
        sandbox = await sandboxes.create()
        with pytest.raises(CapabilityNotSupported) as error:
            await SANDBOX_ACTIONS[capability](sandbox)
        assert error.value.provider == sandbox.provider.name
        assert sandbox.provider.name in str(error.value) and error.value.capability in str(error.value)
        assert (await sandbox.exec(["true"])).exit_code == 0

    @pytest.mark.parametrize("capability", list(SPEC_FIELDS), ids=[c.value for c in SPEC_FIELDS])
    async def test_unenforceable_spec_refused(self, sandboxes: Sandboxes, capability: Capability) -> None:
        provider = sandboxes.provider
        if capability in provider.capabilities:
            pytest.skip(f"{provider.name} declares {capability.value}")
        before = {i.id for i in await provider.list()}
        with pytest.raises(CapabilityNotSupported) as error:
            await provider.create(**sandboxes.fields(**SPEC_FIELDS[capability]))
        assert error.value.capability == capability.value
        assert {i.id for i in await provider.list()} == before, "a refused create left a sandbox behind"

    @requires(Capability.PAUSE, Capability.STREAMING)
    async def test_pause_freezes_running_processes(self, sandbox: Sandbox) -> None:
        process = await sandbox.start(["sh", "-c", "i=0; while :; do i=$((i+1)); echo $i; sleep 0.05; done"])
        try:
            assert await _next_chunk(process, self.slack) is not None, "the counter never printed"
            await sandbox.pause()
            assert (await sandbox.info()).state == "paused"
            for _ in range(100):  # let output already in flight arrive
                if await _next_chunk(process, 0.5) is None:
                    break
            assert await _next_chunk(process, 1.5) is None, "a paused sandbox kept running"
            await sandbox.resume()
            assert await _next_chunk(process, self.slack) is not None, "resume() did not wake the process"
        finally:
            await process.kill()

    @requires(Capability.PAUSE)
    async def test_pause_resume(self, sandbox: Sandbox) -> None:
        await sandbox.write_file("before.txt", "x")
        await sandbox.pause()
        assert (await sandbox.info()).state == "paused"
        await sandbox.resume()
        assert (await sandbox.info()).state == "running"
        assert (await sandbox.exec(["cat", "before.txt"])).stdout == b"x"

    async def test_sync_facade(self) -> None:
        def run() -> tuple[bytes, bool]:
            with SyncProvider(self.make_provider()) as provider:
                sandbox = provider.create(**self.spec)
                try:
                    sandbox.write_file("sync.txt", "sync")
                    out = sandbox.exec(["cat", "sync.txt"]).stdout
                finally:
                    sandbox.terminate()
                return out, sandbox.id in {i.id for i in provider.list()}

        out, still_listed = await anyio.to_thread.run_sync(run)
        assert out == b"sync"
        assert not still_listed
