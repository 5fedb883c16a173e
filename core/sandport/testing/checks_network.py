"""Network policy, proven against a TCP server on the test host.

The server binds :meth:`host_address` (127.0.0.1 unless the adapter says otherwise) and
sends a random token to each client. ``open`` must reach it (the positive control, which
shows the check can fail); ``none`` must not.
"""

from __future__ import annotations

import socket

import pytest

from sandport.capabilities import Capability
from sandport.errors import CapabilityNotSupported
from sandport.models import NetworkPolicy
from sandport.sandbox import Sandbox
from sandport.testing._support import Sandboxes, TokenServer, requires
from sandport.testing.base import ConformanceBase

__all__ = ["NetworkChecks"]


def assert_server_up(server: TokenServer) -> None:
    """The host itself can reach the server, so a failure from the sandbox means something."""
    with socket.create_connection((server.host, server.port), timeout=5) as conn:
        assert conn.recv(100).decode().strip() == server.token


class NetworkChecks(ConformanceBase):
    async def _assert_blocked(self, sandbox: Sandbox) -> None:
        with TokenServer(self.host_address()) as server:
            assert_server_up(server)
            result = await sandbox.exec(server.client(), timeout=self.slack)
            assert server.token not in result.text, "a sandbox without network reached the host"
            assert result.exit_code == 3 and result.text.startswith("FAILED"), result.text + result.stderr_text

    @requires(Capability.NETWORK_NONE)
    async def test_network_none_cannot_reach_host(self, sandboxes: Sandboxes) -> None:
        await self._assert_blocked(await sandboxes.create(network="none"))

    @requires(Capability.NETWORK_NONE)
    async def test_network_defaults_to_none(self, sandboxes: Sandboxes) -> None:
        fields = {k: v for k, v in sandboxes.fields().items() if k != "network"}
        sandbox = await sandboxes.provider.create(**fields)
        sandboxes.track(sandbox)
        assert sandbox.spec.network.mode == "none"
        await self._assert_blocked(sandbox)

    @requires(Capability.NETWORK_OPEN)
    async def test_network_open_reaches_host(self, sandboxes: Sandboxes) -> None:
        sandbox = await sandboxes.create(network="open")
        with TokenServer(self.host_address()) as server:
            result = await sandbox.exec(server.client(), timeout=self.slack)
            assert result.text == f"CONNECTED {server.token}\n", result.text + result.stderr_text
            assert server.connections >= 1

    async def test_allowlist_refused_without_capability(self, sandboxes: Sandboxes) -> None:
        provider = sandboxes.provider
        if Capability.NETWORK_ALLOWLIST in provider.capabilities:
            pytest.skip(f"{provider.name} supports {Capability.NETWORK_ALLOWLIST.value}")
        before = {i.id for i in await provider.list()}
        policy = NetworkPolicy(mode="allowlist", allow=["example.com"])
        with pytest.raises(CapabilityNotSupported) as error:
            await provider.create(**sandboxes.fields(network=policy))
        assert error.value.provider == provider.name
        assert error.value.capability == Capability.NETWORK_ALLOWLIST.value
        assert {i.id for i in await provider.list()} == before, "a refused create left a sandbox behind"
