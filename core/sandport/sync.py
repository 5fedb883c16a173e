"""Blocking twins of the async API, for code that is not async.

Each sync object wraps its async twin and runs calls on an event loop in a helper thread
(an anyio blocking portal). Names follow httpx: ``close`` instead of ``aclose``, ``with``
instead of ``async with``. Adapters never write sync code: this wrapper serves them all.
"""

from __future__ import annotations

import builtins
import contextlib
from collections.abc import Callable, Iterator, Mapping
from datetime import timedelta
from pathlib import Path
from types import TracebackType
from typing import Any, ParamSpec, TypeVar

from anyio.from_thread import BlockingPortal, start_blocking_portal

from sandport.models import ExecResult, FileInfo, OutputChunk, SandboxInfo, SandboxSpec, ShellResult, SnapshotRef
from sandport.process import Process
from sandport.provider import Availability, Provider
from sandport.sandbox import Command, Sandbox
from sandport.shell import Shell

__all__ = ["SyncProcess", "SyncProvider", "SyncSandbox", "SyncShell"]

P = ParamSpec("P")
T = TypeVar("T")


class _Portal:
    """A portal thread shared by a provider and the sandboxes it hands out."""

    def __init__(self) -> None:
        self._stack = contextlib.ExitStack()
        self.portal: BlockingPortal = self._stack.enter_context(start_blocking_portal())
        self.closed = False

    def call(self, fn: Callable[P, Any], *args: P.args, **kwargs: P.kwargs) -> Any:
        if self.closed:
            raise RuntimeError("this sandport provider was closed; its sandboxes can no longer be used from it")
        return self.portal.call(lambda: fn(*args, **kwargs))

    def close(self) -> None:
        self.closed = True
        self._stack.close()


class _SandboxPortal:
    """A portal view that reports a terminated sandbox as ``SandboxGone``, even after the
    helper thread has stopped."""

    def __init__(self, portal: _Portal, sandbox: Sandbox) -> None:
        self._portal = portal
        self._sandbox = sandbox

    def call(self, fn: Callable[P, Any], *args: P.args, **kwargs: P.kwargs) -> Any:
        if self._portal.closed:
            self._sandbox._check_alive()
        return self._portal.call(fn, *args, **kwargs)


class SyncProcess:
    """Blocking twin of :class:`~sandport.process.Process`."""

    def __init__(self, portal: _Portal | _SandboxPortal, process: Process) -> None:
        self._portal = portal
        self.aprocess = process

    def __iter__(self) -> Iterator[OutputChunk]:
        iterator = self.aprocess.__aiter__()
        while True:
            try:
                yield self._portal.call(iterator.__anext__)
            except StopAsyncIteration:
                return

    def write_stdin(self, data: bytes | str) -> None:
        self._portal.call(self.aprocess.write_stdin, data)

    def close_stdin(self) -> None:
        self._portal.call(self.aprocess.close_stdin)

    def wait(self, timeout: float | None = None) -> ExecResult:
        result: ExecResult = self._portal.call(self.aprocess.wait, timeout)
        return result

    def kill(self) -> None:
        self._portal.call(self.aprocess.kill)


class SyncShell:
    """Blocking twin of :class:`~sandport.shell.Shell`."""

    def __init__(self, portal: _Portal | _SandboxPortal, shell: Shell) -> None:
        self._portal = portal
        self.ashell = shell

    def run(self, command: str, *, timeout: float | None = None) -> ShellResult:
        result: ShellResult = self._portal.call(self.ashell.run, command, timeout=timeout)
        return result

    def close(self) -> None:
        self._portal.call(self.ashell.close)

    def __enter__(self) -> SyncShell:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SyncSandbox:
    """Blocking twin of :class:`~sandport.sandbox.Sandbox`; same arguments and errors."""

    def __init__(self, portal: _Portal, sandbox: Sandbox) -> None:
        self._portal = _SandboxPortal(portal, sandbox)
        self.asandbox = sandbox

    @property
    def id(self) -> str:
        return self.asandbox.id

    @property
    def spec(self) -> SandboxSpec:
        return self.asandbox.spec

    def __repr__(self) -> str:
        return f"<SyncSandbox {self.asandbox.provider.name}:{self.id}>"

    def exec(
        self,
        cmd: Command,
        *,
        cwd: str | None = None,
        env: Mapping[str, str] | None = None,
        stdin: bytes | str | None = None,
        timeout: float | None = None,
        user: str | None = None,
        check: bool = False,
    ) -> ExecResult:
        result: ExecResult = self._portal.call(
            self.asandbox.exec, cmd, cwd=cwd, env=env, stdin=stdin, timeout=timeout, user=user, check=check
        )
        return result

    def start(
        self, cmd: Command, *, cwd: str | None = None, env: Mapping[str, str] | None = None, user: str | None = None
    ) -> SyncProcess:
        return SyncProcess(self._portal, self._portal.call(self.asandbox.start, cmd, cwd=cwd, env=env, user=user))

    def open_shell(self) -> SyncShell:
        return SyncShell(self._portal, self._portal.call(self.asandbox.open_shell))

    def read_file(self, path: str | Path) -> bytes:
        data: bytes = self._portal.call(self.asandbox.read_file, path)
        return data

    def write_file(self, path: str | Path, data: bytes | str, *, mode: int | None = None, parents: bool = True) -> None:
        self._portal.call(self.asandbox.write_file, path, data, mode=mode, parents=parents)

    def list_dir(self, path: str | Path = ".") -> list[FileInfo]:
        entries: list[FileInfo] = self._portal.call(self.asandbox.list_dir, path)
        return entries

    def stat(self, path: str | Path) -> FileInfo:
        info: FileInfo = self._portal.call(self.asandbox.stat, path)
        return info

    def exists(self, path: str | Path) -> bool:
        return bool(self._portal.call(self.asandbox.exists, path))

    def mkdir(self, path: str | Path, *, parents: bool = True, exist_ok: bool = True) -> None:
        self._portal.call(self.asandbox.mkdir, path, parents=parents, exist_ok=exist_ok)

    def remove(self, path: str | Path, *, recursive: bool = False) -> None:
        self._portal.call(self.asandbox.remove, path, recursive=recursive)

    def upload(self, local: str | Path, remote: str | Path) -> None:
        self._portal.call(self.asandbox.upload, local, remote)

    def download(self, remote: str | Path, local: str | Path) -> None:
        self._portal.call(self.asandbox.download, remote, local)

    def snapshot(self) -> SnapshotRef:
        ref: SnapshotRef = self._portal.call(self.asandbox.snapshot)
        return ref

    def pause(self) -> None:
        self._portal.call(self.asandbox.pause)

    def resume(self) -> None:
        self._portal.call(self.asandbox.resume)

    def info(self) -> SandboxInfo:
        info: SandboxInfo = self._portal.call(self.asandbox.info)
        return info

    def terminate(self) -> None:
        if not self.asandbox._terminated:
            self._portal.call(self.asandbox.terminate)

    def close(self) -> None:
        """Terminate the sandbox (the provider's helper thread lives on)."""
        self.terminate()

    def __enter__(self) -> SyncSandbox:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class SyncProvider:
    """Blocking twin of :class:`~sandport.provider.Provider`.

    Build with ``sandport.sync.get_provider(name)`` or wrap an instance:
    ``SyncProvider(LocalProvider())``.
    """

    def __init__(self, provider: Provider) -> None:
        self._portal = _Portal()
        self.aprovider = provider

    @property
    def name(self) -> str:
        return self.aprovider.name

    def _wrap(self, sandbox: Sandbox) -> SyncSandbox:
        return SyncSandbox(self._portal, sandbox)

    def create(self, spec: SandboxSpec | None = None, **fields: Any) -> SyncSandbox:
        return self._wrap(self._portal.call(self.aprovider.create, spec, **fields))

    def connect(self, sandbox_id: str) -> SyncSandbox:
        return self._wrap(self._portal.call(self.aprovider.connect, sandbox_id))

    def list(self, labels: dict[str, str] | None = None) -> builtins.list[SandboxInfo]:
        found: builtins.list[SandboxInfo] = self._portal.call(self.aprovider.list, labels)
        return found

    def restore(self, snapshot: SnapshotRef, **overrides: Any) -> SyncSandbox:
        return self._wrap(self._portal.call(self.aprovider.restore, snapshot, **overrides))

    def delete_snapshot(self, snapshot: SnapshotRef) -> None:
        self._portal.call(self.aprovider.delete_snapshot, snapshot)

    def gc(
        self,
        older_than: timedelta = timedelta(0),
        *,
        owner: str | None = None,
        include_kept: bool = False,
        dry_run: bool = False,
    ) -> builtins.list[str]:
        removed: builtins.list[str] = self._portal.call(
            self.aprovider.gc, older_than, owner=owner, include_kept=include_kept, dry_run=dry_run
        )
        return removed

    def check(self) -> Availability:
        availability: Availability = self._portal.call(self.aprovider.check)
        return availability

    def close(self) -> None:
        """Release the provider's connections and the helper thread; sandboxes live on."""
        try:
            self._portal.call(self.aprovider.aclose)
        finally:
            self._portal.close()

    def __enter__(self) -> SyncProvider:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def get_provider(name: str = "local", **settings: Any) -> SyncProvider:
    """The blocking twin of :func:`sandport.get_provider`."""
    from sandport.plugins import create_provider

    return SyncProvider(create_provider(name, **settings))
