"""The :class:`Sandbox` contract: exec, processes, shell, files, snapshots, lifecycle.

The public methods are the spec. Each one validates its arguments, asks the policy hooks,
runs the provider's implementation (the ``_``-prefixed method of the same name) and emits
one audit event. A provider implements the abstract ``_`` methods; the optional ones
(``_exec``, ``_upload``, ``_download``, ``_snapshot``, ``_pause``, ``_resume``,
``_open_shell``) have generic defaults or raise ``CapabilityNotSupported``.

Paths given to the public methods may be relative (to the sandbox's workdir) or absolute;
the ``_`` methods always receive absolute POSIX paths. Providers must resolve ``..`` and
symlinks as the sandbox's own processes would, and never let a path reach outside the
sandbox.
"""

from __future__ import annotations

import errno
import os
import posixpath
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any

import anyio

from sandport.audit import Redactor
from sandport.capabilities import Capability
from sandport.errors import (
    CapabilityNotSupported,
    CommandFailed,
    CommandTimedOut,
    ProviderError,
    SandboxGone,
)
from sandport.hostfiles import HostTree
from sandport.models import ExecResult, FileInfo, SandboxInfo, SandboxSpec, SnapshotRef
from sandport.process import Process

if TYPE_CHECKING:
    from sandport.provider import Provider
    from sandport.shell import Shell

__all__ = ["Command", "Sandbox"]

Command = str | Sequence[str]
_CHUNK = 1024 * 1024
# What writing to a command's stdin raises once the command stopped reading.
_STDIN_CLOSED = (BrokenPipeError, ConnectionResetError, anyio.BrokenResourceError, anyio.ClosedResourceError)


def _without_trailing(path: str) -> str:
    """``path`` without trailing ``/`` and ``/.``, so that it names a symlink itself."""
    while path != "/" and path.endswith(("/", "/.")):
        path = path[:-1] if path.endswith("/") else path[:-2]
    return path or "/"


@contextmanager
def _lone_error_unwrapped() -> Iterator[None]:
    """Re-raise a task group's single error as itself (not an ``ExceptionGroup``), so that
    callers can write ``except SandboxGone``."""
    try:
        yield
    except BaseExceptionGroup as group:
        leaves = _leaves(group)
        if len(leaves) == 1:
            raise leaves[0] from None
        raise


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    found: list[BaseException] = []
    for exc in group.exceptions:
        found += _leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc]
    return found


def _argv(cmd: Command) -> list[str]:
    """A string runs through ``/bin/sh -c``; a sequence is an argv, never re-split."""
    if isinstance(cmd, str):
        if not cmd.strip():
            raise ValueError("empty command: pass a shell string or a non-empty argv list")
        argv = ["/bin/sh", "-c", cmd]
    else:
        argv = [str(a) for a in cmd]
        if not argv:
            raise ValueError("empty command: pass a shell string or a non-empty argv list")
    if any("\0" in a for a in argv):
        raise ValueError("command contains a NUL byte, which no process can receive")
    return argv


class Sandbox(ABC):
    """One isolated environment that runs commands and holds files.

    Obtain one from ``Provider.create``/``connect``/``restore`` or ``sandport.open``. Use it
    as an async context manager to terminate it on exit. After ``terminate()`` (or if the
    provider lost it), every operation raises :class:`~sandport.errors.SandboxGone`.
    """

    def __init__(self, provider: Provider, sandbox_id: str, spec: SandboxSpec) -> None:
        self.provider = provider
        self.id = sandbox_id
        self.spec = spec
        self._terminated = False
        self._redactor = Redactor(spec.secret_env().values())

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.provider.name}:{self.id}>"

    # -- plumbing shared by every operation ----------------------------------------------

    def _abs(self, path: str | Path) -> str:
        text = str(path)
        if "\0" in text:
            raise ValueError(f"path {text!r} contains a NUL byte")
        if not text:
            raise ValueError("empty path")
        return text if text.startswith("/") else posixpath.join(self.spec.workdir, text)

    def _require(self, capability: Capability) -> None:
        if capability not in self.provider.capabilities:
            raise CapabilityNotSupported(self.provider.name, capability.value)

    def _check_alive(self) -> None:
        if self._terminated:
            raise SandboxGone(self.provider.name, self.id)

    @asynccontextmanager
    async def _operation(self, name: str, **details: Any) -> AsyncIterator[dict[str, Any]]:
        """Policy check before, one audit event after; yields a dict for result details."""
        self._check_alive()
        safe = self._redactor.value(details)
        async with self.provider._audited(name, self.id, safe, self._redactor) as extra:
            yield extra

    # -- exec ----------------------------------------------------------------------------

    async def exec(
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
        """Run a command to completion and return its result.

        Args:
            cmd: a string, run by ``/bin/sh -c``; or an argv list, passed to the program
                exactly as given (spaces, quotes, newlines and unicode are never re-split).
            cwd: working directory, relative to the workdir or absolute (default: workdir).
            env: variables added to the sandbox's ``env`` and ``secrets`` for this call.
            stdin: bytes (or str, UTF-8 encoded) fed to the command; stdin is then closed.
                With ``None`` the command reads EOF at once.
            timeout: seconds. On expiry the whole process tree is killed and the result
                carries the partial output, ``timed_out=True`` and exit code 124; the sandbox
                stays usable. ``None``: no limit beyond the sandbox's lifetime.
            user: run as this user instead of the sandbox's default (needs ``USER``).
            check: raise ``CommandFailed``/``CommandTimedOut`` instead of returning a
                non-zero or timed-out result.

        Returns:
            :class:`ExecResult`: exit code (127 when the program does not exist, 126 when it
            is not executable; neither raises), stdout and stderr as separate raw bytes
            (binary-safe, each capped at ``spec.max_output_bytes`` with ``truncated=True``
            beyond it), ``timed_out`` and ``duration``.

        Raises:
            SandboxGone: the sandbox was terminated or died, before or during the command.
            PolicyDenied: a policy plugin refused the command.
            CapabilityNotSupported: ``user`` or ``stdin`` on a provider without them.
            FileNotFoundError, NotADirectoryError: ``cwd`` is missing or not a directory
                (the message names it).
            ValueError: an empty command, or a NUL byte in it.
        """
        argv = _argv(cmd)
        if user is not None:
            self._require(Capability.USER)
        if stdin is not None:
            self._require(Capability.STDIN)
        data = stdin.encode() if isinstance(stdin, str) else stdin
        cwd_abs = self._abs(cwd) if cwd is not None else self.spec.workdir
        full_env = self._env(env)
        async with self._operation("exec", command=self._redactor.command(cmd), cwd=cwd_abs, env=dict(env or {})) as op:
            result = await self._exec(argv, cwd=cwd_abs, env=full_env, stdin=data, timeout=timeout, user=user)
            op.update(exit_code=result.exit_code, timed_out=result.timed_out, truncated=result.truncated)
        if check and not result.ok:
            error = CommandTimedOut if result.timed_out else CommandFailed
            tail = self._redactor.text(result.stderr[-500:].decode("utf-8", "replace").strip())
            raise error(result, self._redactor.command(cmd), tail)
        return result

    def _env(self, env: Mapping[str, str] | None) -> dict[str, str]:
        for name in env or {}:
            if not name or "=" in name or "\0" in name:
                raise ValueError(f"invalid environment variable name {name!r}")
        return {**self.spec.env, **self.spec.secret_env(), **(env or {})}

    async def start(
        self,
        cmd: Command,
        *,
        cwd: str | None = None,
        env: Mapping[str, str] | None = None,
        user: str | None = None,
    ) -> Process:
        """Start a command and return at once with a :class:`Process`.

        Output arrives as ``OutputChunk`` events in the order the sandbox produced them;
        ``write_stdin``/``close_stdin`` feed it; ``wait(timeout)`` collects the result;
        ``kill()`` kills its whole process tree. Arguments are as for :meth:`exec`.

        Raises:
            CapabilityNotSupported: the provider cannot stream (``STREAMING``).
            SandboxGone, PolicyDenied, FileNotFoundError, NotADirectoryError, ValueError: as for
                :meth:`exec`.
        """
        self._require(Capability.STREAMING)
        argv = _argv(cmd)
        if user is not None:
            self._require(Capability.USER)
        cwd_abs = self._abs(cwd) if cwd is not None else self.spec.workdir
        full_env = self._env(env)
        async with self._operation("start", command=self._redactor.command(cmd), cwd=cwd_abs, env=dict(env or {})):
            return await self._start(argv, cwd=cwd_abs, env=full_env, user=user)

    async def open_shell(self) -> Shell:
        """Open a persistent shell: cwd, environment and background jobs survive between
        its commands, and each command gets its own exit code and output.

        Raises:
            CapabilityNotSupported: the provider has no ``SHELL`` capability.
        """
        self._require(Capability.SHELL)
        async with self._operation("open_shell"):
            return await self._open_shell()

    # -- files ---------------------------------------------------------------------------

    async def read_file(self, path: str | Path) -> bytes:
        """Return the file's bytes, exactly.

        Raises:
            FileNotFoundError: nothing at ``path``.
            IsADirectoryError: ``path`` is a directory.
            PermissionError: the sandbox's processes could not read it either.
            FileTooLarge: the file is larger than ``spec.max_file_bytes``.
            OSError: ``path`` is not a regular file (a FIFO, a socket); never blocks on one.
        """
        target = self._abs(path)
        async with self._operation("read_file", path=target) as op:
            data = await self._read_file(target)
            op["size"] = len(data)
            return data

    async def write_file(
        self, path: str | Path, data: bytes | str, *, mode: int | None = None, parents: bool = True
    ) -> None:
        """Write ``data`` (str is UTF-8 encoded) to ``path``, replacing any file there.

        The write is atomic: a failure leaves the old content (or no file), never half a
        file. ``mode`` sets the permission bits (default 0o644 for a new file, the existing
        bits for a replaced one). With ``parents`` missing parent directories are created.

        Raises:
            IsADirectoryError: ``path`` is a directory.
            FileNotFoundError: a parent is missing and ``parents=False``.
            NotADirectoryError: a parent is a file.
            PermissionError: the location is read-only for the sandbox.
        """
        target = self._abs(path)
        payload = data.encode() if isinstance(data, str) else bytes(data)
        if mode is not None and not 0 <= mode <= 0o7777:
            raise ValueError(f"mode {mode:o} is not a permission mode (0 to 0o7777)")
        async with self._operation("write_file", path=target, size=len(payload), mode=mode):
            await self._write_file(target, payload, mode=mode, parents=parents)

    async def list_dir(self, path: str | Path = ".") -> list[FileInfo]:
        """List a directory's entries (not ``.``/``..``), sorted by name; symlinks are
        reported as ``symlink``, not followed.

        Raises:
            FileNotFoundError: nothing at ``path``.
            NotADirectoryError: ``path`` is not a directory.
        """
        target = self._abs(path)
        async with self._operation("list_dir", path=target) as op:
            entries = sorted(await self._list_dir(target), key=lambda e: e.name)
            op["entries"] = len(entries)
            return entries

    async def stat(self, path: str | Path) -> FileInfo:
        """Describe one path, following symlinks (as ``os.stat`` does).

        Raises:
            FileNotFoundError: nothing at ``path`` (or a dangling symlink).
        """
        target = self._abs(path)
        async with self._operation("stat", path=target):
            return await self._stat(target)

    async def exists(self, path: str | Path) -> bool:
        """True if something is at ``path`` (following symlinks)."""
        try:
            await self.stat(path)
        except FileNotFoundError:
            return False
        return True

    async def mkdir(self, path: str | Path, *, parents: bool = True, exist_ok: bool = True) -> None:
        """Create a directory.

        Raises:
            FileExistsError: ``path`` exists and ``exist_ok`` is false, or it is a file.
            FileNotFoundError: a parent is missing and ``parents`` is false.
        """
        target = self._abs(path)
        async with self._operation("mkdir", path=target):
            await self._mkdir(target, parents=parents, exist_ok=exist_ok)

    async def remove(self, path: str | Path, *, recursive: bool = False) -> None:
        """Remove a file, a symlink (not its target) or, with ``recursive``, a directory tree.

        A trailing ``/`` or ``/.`` does not make a symlink mean its target: ``remove("lnk/",
        recursive=True)`` removes the link ``lnk`` and leaves what it points to.

        Raises:
            FileNotFoundError: nothing at ``path``.
            IsADirectoryError: ``path`` is a non-empty directory and ``recursive`` is false.
        """
        target = _without_trailing(self._abs(path))
        if posixpath.normpath(target) == "/":
            raise PermissionError("refusing to remove the sandbox's root directory")
        async with self._operation("remove", path=target, recursive=recursive):
            await self._remove(target, recursive=recursive)

    async def upload(self, local: str | Path, remote: str | Path) -> None:
        """Copy a local file or directory tree to ``remote`` (created or replaced), as one
        transfer where the provider supports it. Permission bits are kept, without setuid,
        setgid and sticky; symlinks are copied as symlinks.

        Raises:
            FileNotFoundError: ``local`` does not exist.
            IsADirectoryError: ``local`` is a file and ``remote`` is a directory (nothing
                is changed).
        """
        source = Path(local)
        if not source.exists() and not source.is_symlink():
            raise FileNotFoundError(f"local path {str(source)!r} does not exist")
        target = self._abs(remote)
        async with self._operation("upload", local=str(source), path=target):
            await self._upload(source, target)

    async def download(self, remote: str | Path, local: str | Path) -> None:
        """Copy a file or directory tree from the sandbox to ``local``.

        The sandbox's content is not trusted (see :mod:`sandport.hostfiles`): nothing is
        written outside ``local`` or through a symlink already there; permission bits are
        kept without setuid, setgid and sticky; a symlink is recreated only if, resolved on
        the host, it leads to somewhere inside ``local``.

        Raises:
            FileNotFoundError: nothing at ``remote``.
        """
        target = self._abs(remote)
        async with self._operation("download", path=target, local=str(local)):
            await self._download(target, Path(local))

    # -- snapshots and lifecycle ---------------------------------------------------------

    async def snapshot(self) -> SnapshotRef:
        """Save the sandbox's filesystem; ``Provider.restore`` makes new sandboxes from it.

        The original keeps running unchanged, unless the provider's docs say otherwise.
        The returned :class:`SnapshotRef` is serialisable and outlives this process.

        Raises:
            CapabilityNotSupported: the provider has no ``SNAPSHOT`` capability.
        """
        self._require(Capability.SNAPSHOT)
        async with self._operation("snapshot") as op:
            ref = await self._snapshot()
            op["snapshot_id"] = ref.id
            return ref

    async def pause(self) -> None:
        """Freeze every process in the sandbox until ``resume()``.

        While paused, ``info().state`` is ``paused`` and starting a command raises
        ``ProviderError`` (resume first); processes already started stay frozen.
        """
        self._require(Capability.PAUSE)
        async with self._operation("pause"):
            await self._pause()

    async def resume(self) -> None:
        """Undo ``pause()``."""
        self._require(Capability.PAUSE)
        async with self._operation("resume"):
            await self._resume()

    async def info(self) -> SandboxInfo:
        """Current state and metadata. Works after terminate (state ``terminated``)."""
        return await self._info()

    async def terminate(self) -> None:
        """Kill every process and delete the sandbox. Idempotent: a second call (or a call
        on a sandbox already gone) returns quietly."""
        if self._terminated:
            return
        async with self.provider._audited("terminate", self.id, {}, self._redactor):
            await self._terminate()
        self._terminated = True

    async def __aenter__(self) -> Sandbox:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        with anyio.CancelScope(shield=True):
            await self.terminate()

    # -- what a provider implements ------------------------------------------------------

    @abstractmethod
    async def _start(self, argv: list[str], *, cwd: str, env: dict[str, str], user: str | None) -> Process:
        """Start ``argv`` in ``cwd`` with exactly ``env`` (the full environment the command
        should see, on top of the sandbox's baseline such as ``PATH``). A missing program
        must surface as exit code 127 from ``wait()``, not as an exception."""

    async def _exec(
        self,
        argv: list[str],
        *,
        cwd: str,
        env: dict[str, str],
        stdin: bytes | None,
        timeout: float | None,
        user: str | None,
    ) -> ExecResult:
        """Run to completion. The default uses ``_start``: it feeds stdin while collecting
        output and waits with the timeout. Override for a faster native path."""
        proc = await self._start(argv, cwd=cwd, env=env, user=user)
        with _lone_error_unwrapped():
            async with anyio.create_task_group() as tg:

                async def feed() -> None:
                    try:
                        for i in range(0, len(stdin or b""), _CHUNK):
                            await proc.write_stdin((stdin or b"")[i : i + _CHUNK])
                    except _STDIN_CLOSED:
                        pass  # the command exited without reading all of it, as `cmd < file` can
                    finally:
                        await proc.close_stdin()

                tg.start_soon(feed)
                result = await proc.wait(timeout)
                tg.cancel_scope.cancel()
        return result

    async def _open_shell(self) -> Shell:
        from sandport.shell import Shell

        return await Shell.open(self)

    @abstractmethod
    async def _read_file(self, path: str) -> bytes: ...

    @abstractmethod
    async def _write_file(self, path: str, data: bytes, *, mode: int | None, parents: bool) -> None: ...

    @abstractmethod
    async def _list_dir(self, path: str) -> list[FileInfo]: ...

    @abstractmethod
    async def _stat(self, path: str) -> FileInfo: ...

    @abstractmethod
    async def _mkdir(self, path: str, *, parents: bool, exist_ok: bool) -> None: ...

    @abstractmethod
    async def _remove(self, path: str, *, recursive: bool) -> None: ...

    async def _upload(self, source: Path, target: str) -> None:
        """Default: one ``_write_file``/``_mkdir``/``_symlink`` per entry. Override with a
        tar stream."""
        if source.is_symlink():
            await self._symlink(os.readlink(source), target)
        elif source.is_dir():
            await self._mkdir(target, parents=True, exist_ok=True)
            for child in sorted(source.iterdir()):
                await self._upload(child, posixpath.join(target, child.name))
            mode = source.stat().st_mode & 0o777
            if (await self._stat(target)).mode & 0o7777 != mode:
                await self._chmod(target, mode)
        elif source.is_file():
            mode = source.stat().st_mode & 0o777
            await self._write_file(target, source.read_bytes(), mode=mode, parents=True)

    async def _symlink(self, link: str, path: str) -> None:
        """Create (or replace) a symlink at ``path`` whose target is ``link``, never
        following it. Default: ``ln -sfn`` run in the sandbox."""
        await self._mkdir(posixpath.dirname(path), parents=True, exist_ok=True)
        await self._run_tool(["ln", "-sfn", "--", link, path], f"could not create symlink {path}")

    async def _chmod(self, path: str, mode: int) -> None:
        """Set the permission bits of ``path``. Default: ``chmod`` run in the sandbox."""
        await self._run_tool(["chmod", f"{mode:o}", "--", path], f"could not set the mode of {path}")

    async def _run_tool(self, argv: list[str], failure: str) -> None:
        result = await self._exec(argv, cwd="/", env={}, stdin=None, timeout=60, user=None)
        if result.exit_code != 0:
            raise ProviderError(self.provider.name, f"{failure}: {result.stderr_text.strip()}")

    async def _download(self, source: str, target: Path) -> None:
        """Default: walk the tree with ``_stat``/``_list_dir`` (without recursion, so any
        depth works), read files with ``_download_data`` and write them with
        :class:`~sandport.hostfiles.HostTree`. Symlinks are not copied (the contract has no
        way to read one); files and directories are, and nothing else."""
        info = await self._stat(source)
        if info.type not in ("file", "dir"):
            raise OSError(errno.EINVAL, os.strerror(errno.EINVAL) + " (not a regular file)", source)
        tree = HostTree(target)
        host = anyio.to_thread.run_sync
        try:
            pending = [("", source, info)]
            while pending:
                rel, path, entry = pending.pop()
                if entry.type == "file":
                    data = await self._download_data(path, entry)
                    try:
                        await host(tree.write, rel, data, entry.mode, entry.mtime.timestamp())
                    finally:
                        if not isinstance(data, bytes):
                            data.close()
                    continue
                await host(tree.mkdir, rel, entry.mode, entry.mtime.timestamp())
                for child in await self._list_dir(path):
                    if child.type in ("file", "dir") and child.name not in ("", ".", "..") and "/" not in child.name:
                        pending.append((posixpath.join(rel, child.name), posixpath.join(path, child.name), child))
            await host(tree.close)
        except BaseException:
            tree.abort()
            raise

    async def _download_data(self, path: str, info: FileInfo) -> bytes | IO[bytes]:
        """The content of the regular file at ``path`` (described by ``info``) for the
        default ``_download``: bytes, or a binary file object the caller closes. Default:
        ``_read_file``, so capped at ``max_file_bytes``; override to stream larger files."""
        return await self._read_file(path)

    async def _snapshot(self) -> SnapshotRef:
        raise CapabilityNotSupported(self.provider.name, Capability.SNAPSHOT.value)

    async def _pause(self) -> None:
        raise CapabilityNotSupported(self.provider.name, Capability.PAUSE.value)

    async def _resume(self) -> None:
        raise CapabilityNotSupported(self.provider.name, Capability.PAUSE.value)

    @abstractmethod
    async def _info(self) -> SandboxInfo: ...

    @abstractmethod
    async def _terminate(self) -> None:
        """Kill everything and free the sandbox; must not raise if it is already gone."""
