"""sandport: one contract for running code in a sandbox, on any provider.

Quick start::

    import sandport

    with sandport.open("local") as sb:             # blocking
        print(sb.exec(["python3", "-c", "print(6 * 7)"]).text)

    async with sandport.open("local") as sb:       # async
        result = await sb.exec("echo hi")

``open`` creates a sandbox and terminates it when the ``with`` block ends; ``await
sandport.open(...)`` returns one you terminate yourself. Providers come from plugins; the
``local`` provider ships with the core.
"""

from __future__ import annotations

from collections.abc import Generator
from types import TracebackType
from typing import Any

import anyio

from sandport.capabilities import Capability
from sandport.errors import (
    CapabilityNotSupported,
    CommandFailed,
    CommandTimedOut,
    FileTooLarge,
    PolicyDenied,
    ProviderAuthError,
    ProviderError,
    ProviderNotFound,
    ProviderUnavailable,
    RateLimited,
    SandboxGone,
    SandboxNotFound,
    SandportError,
)
from sandport.hookspecs import hookimpl
from sandport.models import (
    ExecResult,
    FileInfo,
    NetworkPolicy,
    OutputChunk,
    Resources,
    SandboxInfo,
    SandboxSpec,
    ShellResult,
    SnapshotRef,
)
from sandport.plugins import create_provider, provider_factories
from sandport.process import Process
from sandport.provider import Availability, Provider
from sandport.sandbox import Sandbox
from sandport.shell import Shell
from sandport.sync import SyncProvider, SyncSandbox

__all__ = [
    "Availability",
    "Capability",
    "CapabilityNotSupported",
    "CommandFailed",
    "CommandTimedOut",
    "ExecResult",
    "FileInfo",
    "FileTooLarge",
    "NetworkPolicy",
    "OutputChunk",
    "PolicyDenied",
    "Process",
    "Provider",
    "ProviderAuthError",
    "ProviderError",
    "ProviderNotFound",
    "ProviderUnavailable",
    "RateLimited",
    "Resources",
    "Sandbox",
    "SandboxGone",
    "SandboxInfo",
    "SandboxNotFound",
    "SandboxSpec",
    "SandportError",
    "Shell",
    "ShellResult",
    "SnapshotRef",
    "SyncProvider",
    "SyncSandbox",
    "get_provider",
    "hookimpl",
    "open",
    "providers",
]

__version__ = "0.1.0"


def get_provider(name: str = "local", **settings: Any) -> Provider:
    """Build the provider registered as ``name`` with its settings (endpoint, credentials).

    Raises:
        ProviderNotFound: nothing is registered under ``name``; the message lists what is
            installed and, for known providers, the package to ``pip install``.
    """
    provider: Provider = create_provider(name, **settings)
    return provider


def providers() -> list[str]:
    """Names of the installed providers (aliases included)."""
    return sorted(provider_factories())


class open:  # noqa: N801 - used like the builtin: `with sandport.open(...) as sb`
    """Create a sandbox; usable with ``with``, ``async with`` or ``await``.

    Args:
        provider: a registered name (default ``local``) or a ``Provider`` instance.
        settings: keyword settings for building the provider by name.
        **fields: :class:`SandboxSpec` fields (``image=``, ``network=``, ``env=``, ...).

    ``with``/``async with`` terminate the sandbox on exit; ``await`` leaves it to you.
    """

    def __init__(self, provider: str | Provider = "local", *, settings: dict[str, Any] | None = None, **fields: Any):
        self._provider = provider
        self._settings = settings or {}
        self._fields = fields
        self._sandbox: Sandbox | None = None
        self._sync: SyncProvider | None = None
        self._sync_sandbox: SyncSandbox | None = None

    def _build_provider(self) -> Provider:
        if isinstance(self._provider, Provider):
            return self._provider
        return get_provider(self._provider, **self._settings)

    async def _create(self) -> Sandbox:
        return await self._build_provider().create(**self._fields)

    def __await__(self) -> Generator[Any, None, Sandbox]:
        return self._create().__await__()

    async def __aenter__(self) -> Sandbox:
        self._sandbox = await self._create()
        return self._sandbox

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._sandbox is not None:
            with anyio.CancelScope(shield=True):
                await self._sandbox.terminate()

    def __enter__(self) -> SyncSandbox:
        self._sync = SyncProvider(self._build_provider())
        try:
            self._sync_sandbox = self._sync.create(**self._fields)
        except BaseException:
            self._sync.close()
            raise
        return self._sync_sandbox

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self._sync is not None
        try:
            if self._sync_sandbox is not None:
                self._sync_sandbox.terminate()
        finally:
            self._sync.close()
