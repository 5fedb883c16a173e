"""Walking and removing directory trees a sandbox controls, from the host.

A sandboxed program may rename, replace or swap any entry below its directories while the
host works on them. So nothing here resolves a path: each directory is opened relative to
its parent's descriptor with ``O_NOFOLLOW``, a symlink is an entry (never a way in), and a
walk is a loop over an explicit stack, so a tree of any depth works (``shutil.rmtree`` and
``tarfile.add`` recurse, and fail at about a thousand levels).
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from dataclasses import dataclass
from types import TracebackType
from typing import Generic, TypeVar

__all__ = ["DirStack", "open_dir", "remove_tree"]

T = TypeVar("T")

#: Directories a walk keeps open below its root; the ones further up are re-opened on the
#: way back, so a deep tree cannot run the process out of file descriptors.
KEEP_OPEN = 32
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def open_dir(name: str | os.PathLike[str], dir_fd: int | None = None) -> int:
    """Open the directory ``name`` (relative to ``dir_fd``) without following a symlink.

    Raises:
        NotADirectoryError: ``name`` is a symlink or anything else but a directory.
        FileNotFoundError: nothing is there.
    """
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise NotADirectoryError(errno.ENOTDIR, "a symlink, not a directory", os.fspath(name)) from None
        raise


def _identity(fd: int) -> tuple[int, int]:
    st = os.fstat(fd)
    return st.st_dev, st.st_ino


@dataclass
class _Level(Generic[T]):
    name: str
    identity: tuple[int, int]
    fd: int | None  # None: closed, re-opened on the way back up
    data: T


class DirStack(Generic[T]):
    """The open path from a root directory down to the current one, with the caller's
    ``data`` for each level.

    ``push`` descends into a subdirectory of the current one without following a symlink.
    Only the root and the deepest :data:`KEEP_OPEN` levels stay open; going back up to a
    closed level re-opens it through ``..`` and checks that it is the very directory (device
    and inode) that was descended from. If the tree was moved meanwhile, levels are re-opened
    by name from the deepest open one, checking each; the stack is cut at the first one that
    is no longer where it was, and ``pop`` says so by returning False.
    """

    def __init__(self, root_fd: int, data: T) -> None:
        """Takes ownership of ``root_fd``, an open directory."""
        self._levels: list[_Level[T]] = [_Level("", _identity(root_fd), root_fd, data)]

    def __enter__(self) -> DirStack[T]:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        for level in self._levels:
            if level.fd is not None:
                os.close(level.fd)
                level.fd = None
        del self._levels[1:]

    @property
    def depth(self) -> int:
        """How many levels below the root the current directory is."""
        return len(self._levels) - 1

    @property
    def fd(self) -> int:
        """The current directory."""
        fd = self._levels[-1].fd
        assert fd is not None
        return fd

    @property
    def root_fd(self) -> int:
        fd = self._levels[0].fd
        assert fd is not None
        return fd

    @property
    def name(self) -> str:
        """The current directory's name in its parent ("" at the root)."""
        return self._levels[-1].name

    @property
    def data(self) -> T:
        return self._levels[-1].data

    def names(self) -> list[str]:
        """The names from the root down to the current directory."""
        return [level.name for level in self._levels[1:]]

    def push(self, name: str, data: T, *, fd: int | None = None) -> None:
        """Descend into the subdirectory ``name``; raises like :func:`open_dir`. ``fd``: the
        caller opened it already (relative to :attr:`fd`, without following symlinks)."""
        if fd is None:
            fd = open_dir(name, self.fd)
        self._levels.append(_Level(name, _identity(fd), fd, data))
        if len(self._levels) > KEEP_OPEN + 1:
            older = self._levels[-KEEP_OPEN - 1]
            if older.fd is not None:
                os.close(older.fd)
                older.fd = None

    def pop(self) -> bool:
        """Go up one level. False if the stack had to be cut further up, because a level
        above had been moved away (see the class docstring)."""
        child = self._levels.pop()
        assert child.fd is not None and self._levels
        try:
            parent = self._levels[-1]
            if parent.fd is not None:
                return True
            with contextlib.suppress(OSError):
                up = os.open("..", _DIR_FLAGS, dir_fd=child.fd)
                if _identity(up) == parent.identity:
                    parent.fd = up
                    return True
                os.close(up)
            return self._reopen()
        finally:
            os.close(child.fd)

    def _reopen(self) -> bool:
        """Re-open the closed levels by name from the deepest open one, checking each is the
        directory it was; cut the stack at the first that is not. True if none was cut."""
        start = max(i for i, level in enumerate(self._levels) if level.fd is not None)
        keep_from = len(self._levels) - KEEP_OPEN
        for i in range(start + 1, len(self._levels)):
            above, level = self._levels[i - 1], self._levels[i]
            assert above.fd is not None
            try:
                fd: int | None = open_dir(level.name, above.fd)
            except OSError:
                fd = None
            if fd is not None and _identity(fd) != level.identity:
                os.close(fd)
                fd = None
            if fd is None:
                del self._levels[i:]  # all closed already
                return False
            level.fd = fd
            if 0 < i - 1 < keep_from:
                os.close(above.fd)
                above.fd = None
        return True


def remove_tree(name: str | os.PathLike[str], *, dir_fd: int | None = None) -> None:
    """Remove ``name`` (relative to ``dir_fd``) and, if it is a directory, everything in it.

    Never follows a symlink: one in the tree is removed, not its target. Any depth works.
    Directories the caller owns but may not write or search (``chmod 0`` by the sandbox)
    are opened up first, as their owner could. Entries that vanish meanwhile are fine; a
    directory that gains entries meanwhile fails with ``OSError(ENOTEMPTY)`` rather than
    being chased forever.

    Raises:
        FileNotFoundError: nothing is at ``name``.
    """
    st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    if not stat.S_ISDIR(st.st_mode):
        os.unlink(name, dir_fd=dir_fd)
        return
    with DirStack(_open_owned_dir(name, dir_fd), None) as stack:
        while True:
            subdirectory = _unlink_files(stack.fd)
            if subdirectory is not None:
                with contextlib.suppress(FileNotFoundError, NotADirectoryError):  # the next scan sees what it became
                    stack.push(subdirectory, None, fd=_open_owned_dir(subdirectory, stack.fd))
                continue
            if stack.depth == 0:
                break
            emptied = stack.name
            if stack.pop():
                with contextlib.suppress(FileNotFoundError):
                    os.rmdir(emptied, dir_fd=stack.fd)
    os.rmdir(name, dir_fd=dir_fd)


def _open_owned_dir(name: str | os.PathLike[str], dir_fd: int | None) -> int:
    """:func:`open_dir`, first giving the owner ``rwx`` if the directory is ours and lacks it."""
    try:
        fd = open_dir(name, dir_fd)
    except PermissionError:
        path_fd = os.open(name, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
        try:
            st = os.fstat(path_fd)
            if st.st_uid != os.geteuid():
                raise
            os.chmod(f"/proc/self/fd/{path_fd}", stat.S_IMODE(st.st_mode) | stat.S_IRWXU)
        finally:
            os.close(path_fd)
        fd = open_dir(name, dir_fd)
    st = os.fstat(fd)
    if st.st_uid == os.geteuid() and st.st_mode & stat.S_IRWXU != stat.S_IRWXU:
        os.fchmod(fd, stat.S_IMODE(st.st_mode) | stat.S_IRWXU)
    return fd


def _unlink_files(fd: int) -> str | None:
    """Unlink everything but directories in the directory ``fd``; return the name of a
    subdirectory if one is left."""
    for entry in os.listdir(fd):
        try:
            os.unlink(entry, dir_fd=fd)
        except IsADirectoryError:
            return entry
        except FileNotFoundError:
            continue
    return None
