"""File operations on a local sandbox that see what its processes see, and nothing more.

A path is resolved the way the kernel would resolve it *inside* the sandbox: relative to the
sandbox's own root, following symlinks (including ones a sandboxed command created, such as
``evil -> /etc`` or ``up -> ../../..``) within the sandbox's view, never the host's. The
result is opened component by component with ``O_NOFOLLOW`` from the mount's directory, so a
symlink swapped in by a concurrent command fails the operation instead of escaping.

Operations act with the sandbox user's rights. When sandport runs as root it is not the
sandbox user (see :func:`sandport.local.isolation.sandbox_user`), so the permission bits are
checked here as the kernel would check them for that user (who has no capabilities): reading
needs ``r``, replacing a file needs ``w`` on it, creating or removing an entry needs ``w`` and
``x`` on its directory, and every directory on the way needs ``x``. What sandport creates
belongs to the sandbox user.
"""

from __future__ import annotations

import errno
import os
import posixpath
import secrets
import stat
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import BinaryIO

from sandport.local.isolation import Mount, SandboxUser
from sandport.local.tree import remove_tree
from sandport.models import FileInfo

__all__ = ["SandboxFS"]

_MAX_LINKS = 40
_R, _W, _X = 4, 2, 1
_EPOCH = datetime.fromtimestamp(0, UTC)


def _split(path: str) -> list[str]:
    return [p for p in path.split("/") if p not in ("", ".")]


def _err(cls: type[OSError], code: int, path: str, extra: str = "") -> OSError:
    return cls(code, os.strerror(code) + extra, path)


@dataclass(frozen=True)
class _Target:
    """A resolved sandbox path: the mount that holds it and the path inside that mount."""

    path: str
    mount: Mount | None  # None: a directory that exists only in the view (like "/")
    rel: tuple[str, ...]


class SandboxFS:
    """The sandbox's filesystem view, built from :class:`Mount` entries."""

    def __init__(self, mounts: list[Mount], user: SandboxUser | None = None) -> None:
        """``user``: the sandbox's host user; its rights are enforced here when the calling
        process is someone else (``user.drop``)."""
        self._mounts = {m.path: m for m in mounts}
        self._user = user if user is not None and user.drop else None

    # -- rights --------------------------------------------------------------------------

    def _allowed(self, st: os.stat_result, want: int) -> bool:
        return self._user is None or self._user.permits(st, want)

    def _require(self, st: os.stat_result, want: int, path: str) -> None:
        if not self._allowed(st, want):
            raise _err(PermissionError, errno.EACCES, path)

    def _may_change_entry(self, dir_fd: int, name: str, path: str, *, entry: os.stat_result | None) -> None:
        """Raise PermissionError unless the sandbox user may create, replace or remove
        ``name`` in the directory ``dir_fd`` (``w`` and ``x`` on it; with the sticky bit
        set, only its own entries)."""
        if self._user is None:
            return
        parent = os.fstat(dir_fd)
        self._require(parent, _W | _X, path)
        if entry is not None and parent.st_mode & stat.S_ISVTX and self._user.uid not in (entry.st_uid, parent.st_uid):
            raise _err(PermissionError, errno.EPERM, path, " (sticky directory)")

    def _give(self, fd: int | None = None, *, name: str = "", dir_fd: int | None = None) -> None:
        """Make a file sandport just created belong to the sandbox user."""
        if self._user is None:
            return
        if fd is not None:
            os.fchown(fd, self._user.uid, self._user.gid)
        else:
            os.chown(name, self._user.uid, self._user.gid, dir_fd=dir_fd, follow_symlinks=False)

    # -- resolution ----------------------------------------------------------------------

    def _locate(self, path: str) -> _Target | None:
        """Map a canonical sandbox path to its mount, or None if nothing is there."""
        probe = path
        while True:
            mount = self._mounts.get(probe)
            if mount is not None:
                rel = _split(path[len(probe) :])
                if mount.link is not None and rel:
                    return None  # callers resolve links before descending
                return _Target(path, mount, tuple(rel))
            if probe == "/":
                break
            probe = posixpath.dirname(probe)
        if any(m.startswith(path.rstrip("/") + "/") for m in self._mounts):
            return _Target(path, None, ())
        return None

    def _host(self, target: _Target) -> str:
        assert target.mount is not None and target.mount.host is not None
        return os.path.join(target.mount.host, *target.rel)

    def _readlink(self, target: _Target) -> str | None:
        if target.mount is None:
            return None
        if target.mount.link is not None:
            return target.mount.link
        try:
            st = os.lstat(self._host(target))
        except (FileNotFoundError, NotADirectoryError):
            return None
        return os.readlink(self._host(target)) if stat.S_ISLNK(st.st_mode) else None

    def resolve(self, path: str, *, follow_last: bool = True) -> str:
        """The canonical sandbox path of ``path``, with ``..`` and symlinks resolved inside
        the sandbox. Components past a missing one are appended as given."""
        todo = deque(_split(path))
        done: list[str] = []
        hops = 0
        while todo:
            name = todo.popleft()
            if name == "..":
                if done:
                    done.pop()
                continue
            candidate = "/" + "/".join([*done, name])
            target = self._locate(candidate)
            if target is None:  # nothing there: the rest cannot contain symlinks we could see
                rest = [*done, name, *todo]
                return posixpath.normpath("/" + "/".join(rest))
            link = self._readlink(target) if (todo or follow_last) else None
            if link is None:
                done.append(name)
                continue
            hops += 1
            if hops > _MAX_LINKS:
                raise _err(OSError, errno.ELOOP, path)
            if link.startswith("/"):
                done = []
            todo.extendleft(reversed(_split(link) if link.strip("/") else []))
        return "/" + "/".join(done)

    def _target(self, path: str, *, follow_last: bool = True) -> _Target:
        canonical = self.resolve(path, follow_last=follow_last)
        target = self._locate(canonical)
        if target is None:
            raise _err(FileNotFoundError, errno.ENOENT, path)
        return target

    @contextmanager
    def _parent_fd(self, target: _Target) -> Iterator[int]:
        """An O_PATH fd on the directory holding ``target``, opened without following any
        symlink below the mount's root."""
        assert target.mount is not None and target.mount.host is not None
        fd = os.open(target.mount.host, os.O_PATH | os.O_DIRECTORY)
        try:
            for name in target.rel[:-1]:
                self._require(os.fstat(fd), _X, target.path)
                try:
                    child = os.open(name, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
                except OSError as exc:
                    if exc.errno in (errno.ELOOP, errno.ENOTDIR) and os.path.islink(
                        os.path.join(f"/proc/self/fd/{fd}", name)
                    ):
                        raise _err(PermissionError, errno.EACCES, target.path, " (path changed while in use)") from None
                    raise type(exc)(exc.errno, exc.strerror, target.path) from None
                os.close(fd)
                fd = child
            if target.rel:
                self._require(os.fstat(fd), _X, target.path)
            yield fd
        finally:
            os.close(fd)

    def _writable(self, target: _Target, path: str) -> None:
        if target.mount is None or not target.mount.writable:
            raise _err(PermissionError, errno.EROFS, path, " (read-only in this sandbox)")

    # -- operations ----------------------------------------------------------------------

    def stat(self, path: str, *, follow: bool = True) -> FileInfo:
        target = self._target(path, follow_last=follow)
        name = posixpath.basename(target.path) or "/"
        if target.mount is None:
            return FileInfo(path=target.path, name=name, type="dir", size=0, mode=0o755, mtime=_EPOCH)
        if target.mount.link is not None:
            return FileInfo(path=target.path, name=name, type="symlink", size=0, mode=0o777, mtime=_EPOCH)
        if not target.rel:
            st = os.stat(target.mount.host)  # type: ignore[arg-type]
        else:
            with self._parent_fd(target) as fd:
                st = os.stat(target.rel[-1], dir_fd=fd, follow_symlinks=False)
        return _info(target.path, name, st)

    def list_dir(self, path: str) -> list[FileInfo]:
        target = self._target(path)
        if target.mount is None or target.mount.link is not None:
            prefix = target.path.rstrip("/") + "/"
            names = {m[len(prefix) :].split("/")[0] for m in self._mounts if m.startswith(prefix)}
            return [self.stat(prefix + n, follow=False) for n in sorted(names)]
        info = self.stat(path)
        if not info.is_dir:
            raise _err(NotADirectoryError, errno.ENOTDIR, path)
        fd = self._open(target, os.O_RDONLY | os.O_DIRECTORY)
        try:
            self._require(os.fstat(fd), _R | _X, path)
            return [_info(posixpath.join(target.path, e.name), e.name, e.stat(follow_symlinks=False))
                    for e in os.scandir(fd)]  # fmt: skip
        finally:
            os.close(fd)

    def _open(self, target: _Target, flags: int, mode: int = 0o644) -> int:
        if target.mount is None:
            raise _err(IsADirectoryError, errno.EISDIR, target.path)
        if not target.rel:
            return os.open(target.mount.host, flags, mode)  # type: ignore[arg-type]
        with self._parent_fd(target) as fd:
            return os.open(target.rel[-1], flags | os.O_NOFOLLOW, mode, dir_fd=fd)

    def open_file(self, path: str) -> int:
        """A read-only fd on the regular file at ``path`` (the caller closes it)."""
        target = self._target(path)
        try:  # O_NONBLOCK: opening a FIFO planted by the sandbox must not wait for a writer
            fd = self._open(target, os.O_RDONLY | os.O_NONBLOCK)
        except OSError as exc:
            raise type(exc)(exc.errno, exc.strerror, path) from None
        st = os.fstat(fd)
        if not self._allowed(st, _R):
            os.close(fd)
            raise _err(PermissionError, errno.EACCES, path)
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            if stat.S_ISDIR(st.st_mode):
                raise _err(IsADirectoryError, errno.EISDIR, path)
            raise _err(OSError, errno.EINVAL, path, " (not a regular file)")
        os.set_blocking(fd, True)
        return fd

    def open_tree(self, path: str) -> int | None:
        """A read-only fd on the regular file or directory at ``path``, to copy it out (the
        caller closes it); None where it is a directory made of mounts (such as ``/``) or
        has mounts below it, which only this view can list."""
        target = self._target(path)
        below = target.path.rstrip("/") + "/"
        if target.mount is None or target.mount.link is not None or any(m.startswith(below) for m in self._mounts):
            return None
        try:
            fd = self._open(target, os.O_RDONLY | os.O_NONBLOCK)
        except OSError as exc:
            raise type(exc)(exc.errno, exc.strerror, path) from None
        st = os.fstat(fd)
        is_dir = stat.S_ISDIR(st.st_mode)
        if not (is_dir or stat.S_ISREG(st.st_mode)) or not self._allowed(st, _R | _X if is_dir else _R):
            os.close(fd)
            if is_dir or stat.S_ISREG(st.st_mode):
                raise _err(PermissionError, errno.EACCES, path)
            raise _err(OSError, errno.EINVAL, path, " (not a regular file or directory)")
        os.set_blocking(fd, True)
        return fd

    def read(self, path: str, limit: int) -> bytes:
        """Read a whole file; raises ``ValueError(size)`` if it is over ``limit`` bytes."""
        fd = self.open_file(path)
        try:
            size = os.fstat(fd).st_size
            if size > limit:
                raise ValueError(size)
            chunks = []
            size = 0
            while chunk := os.read(fd, 1 << 20):
                chunks.append(chunk)
                size += len(chunk)
                if size > limit:
                    raise ValueError(size)
            return b"".join(chunks)
        finally:
            os.close(fd)

    def write(self, path: str, data: bytes | BinaryIO, *, mode: int | None, parents: bool) -> None:
        """Write atomically: a temporary file in the same directory, renamed over the target.

        ``data`` is bytes, or a binary file object that is copied in chunks."""
        canonical = self.resolve(path)
        parent = posixpath.dirname(canonical)
        if parents:
            try:
                self.mkdir(parent, parents=True, exist_ok=True)
            except FileExistsError:  # the parent is a file
                raise _err(NotADirectoryError, errno.ENOTDIR, path) from None
        target = self._target(canonical)
        self._writable(target, path)
        if not target.rel:
            raise _err(IsADirectoryError, errno.EISDIR, path)
        with self._parent_fd(target) as dir_fd:
            name = target.rel[-1]
            try:
                old = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            except FileNotFoundError:
                old = None
            if old is not None and stat.S_ISDIR(old.st_mode):
                raise _err(IsADirectoryError, errno.EISDIR, path)
            self._may_change_entry(dir_fd, name, path, entry=old)
            if old is not None and not stat.S_ISLNK(old.st_mode):
                self._require(old, _W, path)
            bits = mode if mode is not None else (stat.S_IMODE(old.st_mode) if old else 0o644)
            tmp = f".{name[:200]}.sandport-{secrets.token_hex(6)}.tmp"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600, dir_fd=dir_fd)
            try:
                try:
                    self._give(fd)
                    if isinstance(data, bytes):
                        _write_all(fd, data)
                    else:
                        while chunk := data.read(1 << 20):
                            _write_all(fd, chunk)
                    os.fchmod(fd, bits)
                finally:
                    os.close(fd)
                os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
            except BaseException:
                try:
                    os.unlink(tmp, dir_fd=dir_fd)
                except FileNotFoundError:
                    pass
                raise

    def mkdir(self, path: str, *, parents: bool, exist_ok: bool) -> None:
        canonical = self.resolve(path)
        existing = self._locate(canonical)
        if existing is not None and self._exists(existing):
            if not self.stat(canonical).is_dir:
                raise _err(FileExistsError, errno.EEXIST, path, " (a file is in the way)")
            if not exist_ok:
                raise _err(FileExistsError, errno.EEXIST, path)
            return
        parent = posixpath.dirname(canonical)
        parent_target = self._locate(parent)
        if parent_target is None or not self._exists(parent_target):
            if not parents:
                raise _err(FileNotFoundError, errno.ENOENT, path, " (parent directory missing)")
            self.mkdir(parent, parents=True, exist_ok=True)
        elif not self.stat(parent).is_dir:
            raise _err(NotADirectoryError, errno.ENOTDIR, path)
        target = self._target(canonical)
        self._writable(target, path)
        with self._parent_fd(target) as fd:
            self._may_change_entry(fd, target.rel[-1], path, entry=None)
            try:
                os.mkdir(target.rel[-1], 0o755, dir_fd=fd)
            except FileExistsError:
                if not exist_ok:
                    raise
            else:
                self._give(name=target.rel[-1], dir_fd=fd)

    def _exists(self, target: _Target) -> bool:
        if target.mount is None or target.mount.link is not None or not target.rel:
            return True
        try:
            with self._parent_fd(target) as fd:
                os.stat(target.rel[-1], dir_fd=fd, follow_symlinks=False)
        except (FileNotFoundError, NotADirectoryError):
            return False
        return True

    def remove(self, path: str, *, recursive: bool) -> None:
        target = self._target(path, follow_last=False)
        self._writable(target, path)
        if not target.rel:
            raise _err(PermissionError, errno.EBUSY, path, " (a mount point of the sandbox)")
        with self._parent_fd(target) as fd:
            name = target.rel[-1]
            st = os.stat(name, dir_fd=fd, follow_symlinks=False)
            self._may_change_entry(fd, name, path, entry=st)
            if not stat.S_ISDIR(st.st_mode):
                os.unlink(name, dir_fd=fd)
            elif recursive:
                remove_tree(name, dir_fd=fd)
            else:
                try:
                    os.rmdir(name, dir_fd=fd)
                except OSError as exc:
                    if exc.errno == errno.ENOTEMPTY:
                        raise _err(IsADirectoryError, errno.EISDIR, path, " (not empty; pass recursive=True)") from None
                    raise


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _info(path: str, name: str, st: os.stat_result) -> FileInfo:
    kind = ("dir" if stat.S_ISDIR(st.st_mode) else "file" if stat.S_ISREG(st.st_mode)
            else "symlink" if stat.S_ISLNK(st.st_mode) else "other")  # fmt: skip
    return FileInfo(
        path=path,
        name=name,
        type=kind,  # type: ignore[arg-type]
        size=st.st_size,
        mode=stat.S_IMODE(st.st_mode),
        mtime=datetime.fromtimestamp(st.st_mtime, UTC),
    )
