"""Helpers shared by the conformance checks: capability gating, sandbox bookkeeping, a
host-side TCP server and small command builders."""

from __future__ import annotations

import secrets
import socket
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

import anyio

from sandport.capabilities import Capability
from sandport.errors import SandboxNotFound
from sandport.models import SnapshotRef

if TYPE_CHECKING:
    from sandport.provider import Provider
    from sandport.sandbox import Sandbox

__all__ = ["Sandboxes", "TokenServer", "Canary", "py", "required_capabilities", "requires"]

F = TypeVar("F", bound=Callable[..., Any])
_REQUIRES = "__sandport_requires__"


def requires(*capabilities: Capability) -> Callable[[F], F]:
    """Mark a check as needing ``capabilities``; it is skipped (naming them) where missing."""

    def mark(fn: F) -> F:
        setattr(fn, _REQUIRES, (*getattr(fn, _REQUIRES, ()), *capabilities))
        return fn

    return mark


def required_capabilities(fn: Any) -> tuple[Capability, ...]:
    return tuple(getattr(fn, _REQUIRES, ()))


def py(source: str, *args: str) -> list[str]:
    """An argv running a Python snippet (dedented) in the sandbox's ``python3``."""
    return ["python3", "-c", textwrap.dedent(source), *args]


class Sandboxes:
    """Creates sandboxes for one check and cleans up after it: every sandbox it made or was
    given is terminated and every snapshot deleted, whatever the check's outcome."""

    def __init__(self, provider: Provider, spec: dict[str, Any]) -> None:
        self.provider = provider
        self._spec = spec
        self._sandboxes: list[Sandbox] = []
        self._snapshots: list[tuple[Provider, SnapshotRef]] = []

    def fields(self, **fields: Any) -> dict[str, Any]:
        """The suite's ``spec`` with ``fields`` on top (labels are merged)."""
        merged = {**self._spec, **fields}
        if "labels" in self._spec or "labels" in fields:
            merged["labels"] = {**self._spec.get("labels", {}), **fields.get("labels", {})}
        return merged

    async def create(self, provider: Provider | None = None, **fields: Any) -> Sandbox:
        sandbox = await (provider or self.provider).create(**self.fields(**fields))
        return self.track(sandbox)

    def track(self, sandbox: Sandbox) -> Sandbox:
        self._sandboxes.append(sandbox)
        return sandbox

    async def snapshot(self, sandbox: Sandbox) -> SnapshotRef:
        ref = await sandbox.snapshot()
        self._snapshots.append((sandbox.provider, ref))
        return ref

    async def restore(self, ref: SnapshotRef, provider: Provider | None = None, **overrides: Any) -> Sandbox:
        return self.track(await (provider or self.provider).restore(ref, **overrides))

    async def close(self) -> None:
        errors: list[BaseException] = []
        with anyio.CancelScope(shield=True):
            for sandbox in reversed(self._sandboxes):
                try:
                    await sandbox.terminate()
                except Exception as exc:
                    errors.append(exc)
            for provider, ref in self._snapshots:
                try:
                    await provider.delete_snapshot(ref)
                except SandboxNotFound:
                    pass
                except Exception as exc:
                    errors.append(exc)
        if errors:
            raise errors[0]


class TokenServer:
    """A TCP server on the test host that sends a random token to whoever connects.

    Listens on ``host`` (an ephemeral port) in a daemon thread for at most ``lifetime``
    seconds. Use as a context manager; ``connections`` counts accepted clients.
    """

    def __init__(self, host: str, lifetime: float = 60.0) -> None:
        self.host = host
        self.token = secrets.token_hex(12)
        self.connections = 0
        self._lifetime = lifetime
        self._stop = threading.Event()
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._sock = socket.socket(family, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((host, 0))
        self._sock.listen(16)
        self._sock.settimeout(0.2)
        self.port: int = self._sock.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, name="sandport-token-server", daemon=True)

    def _serve(self) -> None:
        deadline = time.monotonic() + self._lifetime
        while not self._stop.is_set() and time.monotonic() < deadline:
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                self.connections += 1
                try:
                    conn.sendall(self.token.encode() + b"\n")
                except OSError:
                    pass

    def __enter__(self) -> TokenServer:
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._sock.close()

    def client(self, address: str | None = None) -> list[str]:
        """An argv that connects from inside a sandbox and prints ``CONNECTED <token>``
        (exit 0) or ``FAILED <error>`` (exit 3)."""
        return py(
            """
            import socket, sys
            try:
                with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5) as s:
                    print("CONNECTED", s.recv(100).decode().strip())
            except OSError as exc:
                print("FAILED", type(exc).__name__, exc)
                sys.exit(3)
            """,
            address or self.host,
            str(self.port),
        )


class Canary:
    """Files on the test host that no sandbox may read, change or remove."""

    def __init__(self, directory: Path) -> None:
        self.token = "canary-" + secrets.token_hex(12)
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.file = self.dir / "canary.txt"
        self.file.write_text(self.token)
        self.file.chmod(0o644)

    def intact(self) -> bool:
        """The canary file still holds its token and nothing was added next to it."""
        return (
            self.file.is_file()
            and self.file.read_text() == self.token
            and sorted(p.name for p in self.dir.iterdir()) == ["canary.txt"]
        )
