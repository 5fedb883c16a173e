"""Trees that come out of a sandbox, written onto the host without trusting them.

A download writes names, modes and symlinks that a hostile program chose. :class:`HostTree`
materialises such a tree below a destination the caller picked, and guarantees:

- Nothing is written outside the destination. Everything below it is created relative to
  directory file descriptors opened with ``O_NOFOLLOW``, one component at a time; the
  destination path itself is the caller's and is followed like any path they give.
- Nothing is written through a symlink. An entry that is in the way of a file or directory
  being written (a symlink, perhaps left by an earlier download, or a file) is removed and
  replaced; a directory in the way of a file raises ``IsADirectoryError``.
- Files and directories get ``mode & 0o777``: no setuid, setgid or sticky bit.
- Hard links are made only to regular files written earlier by the same tree.
- Symlinks are made last, by :meth:`HostTree.close`. Each target is resolved against the
  destination as the host kernel would resolve it: following the links already in the
  destination and the ones about to be made, at most 40 hops. A link that is absolute, that
  loops or that leads outside the destination is not made (a warning is logged). A missing
  component counts as a plain directory, so that a later download can change what a link
  means only by making links, which are checked then. Dropping a link changes what the
  links that go through it mean, so the check repeats until nothing changes; a link already
  in the destination that led inside before and would now lead outside is removed.
- Directory modes and times are set last, deepest first, so a read-only directory can
  still be filled.

:func:`copy_tree` copies an open file or directory (a sandbox's files on this host) into a
:class:`HostTree` without following anything below it. Both work at any depth with a
bounded number of open file descriptors.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
from collections import OrderedDict, defaultdict, deque
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import IO

__all__ = ["HostTree", "copy_tree"]

log = logging.getLogger("sandport.hostfiles")

Parts = tuple[str, ...]

_MAX_LINKS = 40
_CHUNK = 1 << 20
_KEEP_OPEN = 64
_PATH = getattr(os, "O_PATH", os.O_RDONLY)  # enough for *at() calls, needs no read permission
_NOT_A_DIR = (errno.ENOENT, errno.ENOTDIR, errno.ELOOP)


def _parts(rel: str) -> Parts:
    """A path relative to the tree's root as components; ``""`` is the root itself."""
    parts = tuple(p for p in rel.split("/") if p not in ("", "."))
    if ".." in parts:
        raise ValueError(f"{rel!r} climbs out of the tree with '..'")
    return parts


def _text(parts: Parts) -> str:
    return "/".join(parts) or "."


class _Dirs:
    """Directory fds below ``root`` by relative path, each opened from its parent with
    ``O_NOFOLLOW``. The most recently used few stay open, so walking a deep tree costs one
    ``open`` per directory and never runs out of file descriptors.

    ``get`` returns a borrowed fd: valid until the next ``get``.
    """

    def __init__(self, root: int, flags: int) -> None:
        self._root = root
        self._flags = flags | os.O_DIRECTORY | os.O_NOFOLLOW
        self._open: OrderedDict[Parts, int] = OrderedDict()

    def get(self, parts: Parts, make: Callable[[int, str, Parts], None] | None = None) -> int:
        """The directory at ``parts``. Where a component is missing or is not a directory,
        ``make(dir_fd, name, path)`` must put one there; without ``make`` the open's
        ``OSError`` propagates."""
        depth = len(parts)
        while depth and parts[:depth] not in self._open:
            depth -= 1
        fd = self._root
        if depth:
            self._open.move_to_end(parts[:depth])
            fd = self._open[parts[:depth]]
        for i in range(depth, len(parts)):
            try:
                child = os.open(parts[i], self._flags, dir_fd=fd)
            except OSError as exc:
                if make is None or exc.errno not in _NOT_A_DIR:
                    raise
                make(fd, parts[i], parts[: i + 1])
                child = os.open(parts[i], self._flags, dir_fd=fd)
            self._open[parts[: i + 1]] = fd = child
            if len(self._open) > _KEEP_OPEN:
                os.close(self._open.popitem(last=False)[1])
        return fd

    def close(self) -> None:
        while self._open:
            os.close(self._open.popitem()[1])


def _write_all(fd: int, data: bytes | IO[bytes]) -> None:
    for chunk in [data] if isinstance(data, bytes) else iter(lambda: data.read(_CHUNK), b""):
        view = memoryview(chunk)
        while view:
            view = view[os.write(fd, view) :]


class HostTree:
    """A tree being written below ``dest`` (see the module docstring for the guarantees).

    Paths are relative to ``dest`` (``""`` is ``dest`` itself: a directory made with
    :meth:`mkdir`, or a file written with :meth:`write`). Components ``.`` are ignored and
    ``..`` raises ``ValueError``. Use it as a context manager: leaving normally calls
    :meth:`close`, which makes the symlinks and sets the directory modes; leaving with an
    exception only releases the file descriptors.
    """

    def __init__(self, dest: str | os.PathLike[str]) -> None:
        self.dest = Path(os.path.abspath(dest))
        self._root: int | None = None  # the destination directory, once made
        self._dirs: _Dirs | None = None
        self._is_file = False
        self._modes: dict[Parts, tuple[int, float | None]] = {}  # directories to finish
        self._links: dict[Parts, str] = {}  # symlinks to make at close
        self._files: dict[Parts, tuple[int, int]] = {}  # regular files written: (dev, inode)
        self._replaced: dict[Parts, str] = {}  # symlinks that were in the way, and their targets
        self._lookups: dict[Parts, str | None] = {}  # what is on disk: a link's target, or None

    # -- writing ---------------------------------------------------------------------------

    def mkdir(self, rel: str = "", mode: int = 0o755, mtime: float | None = None) -> None:
        """Make the directory ``rel`` (and missing parents, mode 0o755); its ``mode`` and
        ``mtime`` are applied at close. An existing directory is kept."""
        parts = _parts(rel)
        self._tree()
        if parts:
            self._get(parts, make=self._make_dir)
        self._modes[parts] = (mode & 0o777, mtime)

    def write(self, rel: str, data: bytes | IO[bytes], mode: int = 0o644, mtime: float | None = None) -> None:
        """Write a regular file at ``rel`` from bytes or a binary file object (read to its
        end), replacing a file or symlink there."""
        parts = _parts(rel)
        if not parts:
            self._write_dest(data, mode, mtime)
            return
        self._tree()
        parent = self._get(parts[:-1], make=self._make_dir)
        name = parts[-1]
        self._links.pop(parts, None)
        self._clear_for_file(parent, name, parts)
        fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600, dir_fd=parent)
        try:
            self._fill(fd, data, mode, mtime)
            st = os.fstat(fd)
        finally:
            os.close(fd)
        self._files[parts] = (st.st_dev, st.st_ino)

    def symlink(self, rel: str, target: str) -> None:
        """Make a symlink at ``rel`` to ``target`` at close, if it resolves inside."""
        parts = _parts(rel)
        if not parts:
            raise ValueError("the destination itself cannot be a symlink")
        if not target or "\0" in target:
            raise ValueError(f"{target!r} is not a symlink target")
        self._tree()
        self._get(parts[:-1], make=self._make_dir)
        self._links[parts] = target

    def hardlink(self, rel: str, source: str) -> bool:
        """Hard-link ``rel`` to the regular file this tree wrote at ``source``; returns
        False (and logs why) when ``source`` is not such a file."""
        parts, origin = _parts(rel), _parts(source)
        if not parts or origin not in self._files or origin in self._links or parts == origin:
            log.warning("not creating hard link %s -> %s: not a file this transfer wrote", _text(parts), source)
            return False
        source_dir = os.dup(self._get(origin[:-1]))
        try:
            st = os.stat(origin[-1], dir_fd=source_dir, follow_symlinks=False)
            if not stat.S_ISREG(st.st_mode) or (st.st_dev, st.st_ino) != self._files[origin]:
                log.warning("not creating hard link %s -> %s: the file changed", _text(parts), source)
                return False
            parent = self._get(parts[:-1], make=self._make_dir)
            self._links.pop(parts, None)
            self._clear_for_file(parent, parts[-1], parts)
            os.link(origin[-1], parts[-1], src_dir_fd=source_dir, dst_dir_fd=parent, follow_symlinks=False)
        finally:
            os.close(source_dir)
        self._files[parts] = self._files[origin]
        return True

    # -- finishing -------------------------------------------------------------------------

    def close(self) -> None:
        """Make the symlinks that resolve inside, set directory modes and times (deepest
        first) and release the file descriptors."""
        try:
            if self._root is not None:
                self._make_links()
                self._finish_dirs()
        finally:
            self.abort()

    def abort(self) -> None:
        """Release the file descriptors; pending symlinks and directory modes are dropped."""
        if self._dirs is not None:
            self._dirs.close()
            self._dirs = None
        if self._root is not None:
            os.close(self._root)
            self._root = None

    def __enter__(self) -> HostTree:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    # -- internals -------------------------------------------------------------------------

    def _tree(self) -> None:
        """Make the destination directory (following the caller's path) on first use."""
        if self._root is not None:
            return
        if self._is_file:
            raise NotADirectoryError(errno.ENOTDIR, "the destination was written as a file", str(self.dest))
        os.makedirs(self.dest, exist_ok=True)
        self._root = os.open(self.dest, os.O_RDONLY | os.O_DIRECTORY)
        self._dirs = _Dirs(self._root, _PATH)

    def _get(self, parts: Parts, make: Callable[[int, str, Parts], None] | None = None) -> int:
        assert self._dirs is not None
        return self._dirs.get(parts, make)

    def _write_dest(self, data: bytes | IO[bytes], mode: int, mtime: float | None) -> None:
        if self._root is not None:
            raise IsADirectoryError(errno.EISDIR, "the destination is a directory", str(self.dest))
        self.dest.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            self._fill(fd, data, mode, mtime)
        finally:
            os.close(fd)
        self._is_file = True

    @staticmethod
    def _fill(fd: int, data: bytes | IO[bytes], mode: int, mtime: float | None) -> None:
        _write_all(fd, data)
        os.fchmod(fd, mode & 0o777)
        if mtime is not None:
            os.utime(fd, (mtime, mtime))

    def _clear(self, dir_fd: int, name: str, parts: Parts) -> bool:
        """Remove a non-directory at ``name``, remembering a symlink's target. Returns True
        if a directory is there (left alone)."""
        try:
            st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            return False
        if stat.S_ISDIR(st.st_mode):
            return True
        if stat.S_ISLNK(st.st_mode):
            self._replaced.setdefault(parts, os.readlink(name, dir_fd=dir_fd))
        os.unlink(name, dir_fd=dir_fd)
        self._files.pop(parts, None)
        self._lookups.pop(parts, None)
        return False

    def _make_dir(self, dir_fd: int, name: str, parts: Parts) -> None:
        self._links.pop(parts, None)
        if self._clear(dir_fd, name, parts):
            return
        os.mkdir(name, 0o700, dir_fd=dir_fd)
        self._modes.setdefault(parts, (0o755, None))

    def _clear_for_file(self, dir_fd: int, name: str, parts: Parts) -> None:
        if self._clear(dir_fd, name, parts):
            raise IsADirectoryError(errno.EISDIR, "a directory is in the way", str(self.dest.joinpath(*parts)))

    def _finish_dirs(self) -> None:
        assert self._root is not None
        for parts, (mode, mtime) in sorted(self._modes.items(), key=lambda item: -len(item[0])):
            try:
                if parts:
                    fd = os.open(parts[-1], os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=self._get(parts[:-1]))
                else:
                    fd = os.dup(self._root)
            except OSError:
                continue  # it was replaced meanwhile: nothing of ours to finish
            try:
                os.fchmod(fd, mode)
                if mtime is not None:
                    os.utime(fd, (mtime, mtime))
            finally:
                os.close(fd)

    # -- symlinks --------------------------------------------------------------------------

    def _on_disk(self, parts: Parts) -> str | None:
        """The target of the symlink at ``parts`` on disk; None if something else, or
        nothing, is there (or a component above it is not a real directory)."""
        if parts not in self._lookups:
            try:
                parent = self._get(parts[:-1])
                st = os.stat(parts[-1], dir_fd=parent, follow_symlinks=False)
                link = os.readlink(parts[-1], dir_fd=parent) if stat.S_ISLNK(st.st_mode) else None
            except OSError:
                link = None
            self._lookups[parts] = link
        return self._lookups[parts]

    def _is_dir(self, parts: Parts) -> bool:
        try:
            st = os.stat(parts[-1], dir_fd=self._get(parts[:-1]), follow_symlinks=False)
        except OSError:
            return False
        return stat.S_ISDIR(st.st_mode)

    def _resolve(self, at: Parts, target: str, overlay: dict[Parts, str]) -> tuple[Parts | None, list[Parts]]:
        """Where the link at ``at`` leads: its path below the root, or None if it leaves the
        destination, is absolute or loops; and the links followed on the way. ``overlay``
        holds links that count instead of what is on disk at their paths."""
        followed: list[Parts] = []
        if target.startswith("/"):
            return None, followed
        todo = deque(p for p in target.split("/") if p not in ("", "."))
        done = list(at[:-1])
        while todo:
            name = todo.popleft()
            if name == "..":
                if not done:
                    return None, followed
                done.pop()
                continue
            path = (*done, name)
            link = overlay[path] if path in overlay else self._on_disk(path)
            if link is None:
                done.append(name)  # a directory, a file or nothing: the name stays
                continue
            followed.append(path)
            if len(followed) > _MAX_LINKS or link.startswith("/"):
                return None, followed
            todo.extendleft(reversed([p for p in link.split("/") if p not in ("", ".")]))
        return tuple(done), followed

    def _links_on_disk(self) -> dict[Parts, str]:
        """Every symlink below the root now, found without following any."""
        found: dict[Parts, str] = {}
        pending: list[Parts] = [()]
        while pending:
            parts = pending.pop()
            try:
                fd = os.open(".", os.O_RDONLY | os.O_DIRECTORY, dir_fd=self._get(parts))
            except OSError:
                continue
            try:
                with os.scandir(fd) as entries:
                    for entry in entries:
                        if entry.is_symlink():
                            found[(*parts, entry.name)] = os.readlink(entry.name, dir_fd=fd)
                        elif entry.is_dir(follow_symlinks=False):
                            pending.append((*parts, entry.name))
            finally:
                os.close(fd)
        return found

    def _make_links(self) -> None:
        links = self._links
        for parts in [p for p in links if self._is_dir(p)]:
            log.warning("not creating symlink %s -> %s: a directory is there", _text(parts), links.pop(parts))
        if not links and not self._replaced:
            return  # no link was added or removed: the ones on disk mean what they meant
        before = dict(self._replaced)
        guarded = {
            parts: target
            for parts, target in self._links_on_disk().items()
            if parts not in links and self._resolve(parts, target, before)[0] is not None
        }  # links already here that led inside before this transfer
        followers: defaultdict[Parts, set[Parts]] = defaultdict(set)
        todo = deque([*links, *guarded])
        queued = set(todo)
        while todo:
            parts = todo.popleft()
            queued.discard(parts)
            target = links.get(parts) or guarded.get(parts)
            if target is None:
                continue
            where, followed = self._resolve(parts, target, links)
            for path in followed:
                followers[path].add(parts)
            if where is not None:
                continue
            if parts in links:
                del links[parts]
                log.warning("not creating symlink %s -> %s: it leads outside %s", _text(parts), target, self.dest)
            else:
                del guarded[parts]
                if self._on_disk(parts) == target:
                    os.unlink(parts[-1], dir_fd=self._get(parts[:-1]))
                self._lookups[parts] = None
                log.warning("removed symlink %s -> %s: this transfer made it lead outside %s", _text(parts), target,
                            self.dest)  # fmt: skip
            for follower in followers.pop(parts, set()) - queued:
                todo.append(follower)
                queued.add(follower)
        for parts, target in links.items():
            parent = self._get(parts[:-1])
            if self._clear(parent, parts[-1], parts):
                continue  # a directory appeared: checked above, so only by a race
            os.symlink(target, parts[-1], dir_fd=parent)


def copy_tree(source: int, dest: str | os.PathLike[str]) -> None:
    """Copy the file or directory open at the fd ``source`` to ``dest`` through a
    :class:`HostTree`. Below ``source`` nothing is followed: symlinks are copied as
    symlinks; FIFOs, sockets and devices are skipped, as are entries that vanish or change
    type while being copied. The caller keeps ``source`` open."""
    st = os.fstat(source)
    with HostTree(dest) as tree:
        if stat.S_ISREG(st.st_mode):
            with os.fdopen(os.dup(source), "rb") as data:
                tree.write("", data, st.st_mode, st.st_mtime)
            return
        if not stat.S_ISDIR(st.st_mode):
            raise OSError(errno.EINVAL, "not a regular file or directory", str(dest))
        tree.mkdir("", st.st_mode, st.st_mtime)
        dirs = _Dirs(source, os.O_RDONLY)
        try:
            pending: list[Parts] = [()]
            while pending:
                parts = pending.pop()
                try:
                    fd = dirs.get(parts)
                except OSError:
                    continue  # replaced by something else meanwhile
                with os.scandir(fd) as entries:
                    for entry in entries:
                        child = (*parts, entry.name)
                        if _copy_entry(tree, fd, entry, "/".join(child)):
                            pending.append(child)
        finally:
            dirs.close()


def _copy_entry(tree: HostTree, dir_fd: int, entry: os.DirEntry[str], rel: str) -> bool:
    """Copy one entry; True if it is a directory to descend into."""
    try:
        st = entry.stat(follow_symlinks=False)
        if stat.S_ISDIR(st.st_mode):
            tree.mkdir(rel, st.st_mode, st.st_mtime)
            return True
        if stat.S_ISLNK(st.st_mode):
            tree.symlink(rel, os.readlink(entry.name, dir_fd=dir_fd))
        elif stat.S_ISREG(st.st_mode):
            # O_NONBLOCK: a FIFO swapped in after the stat must not block the open.
            fd = os.open(entry.name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=dir_fd)
            with os.fdopen(fd, "rb") as data:
                opened = os.fstat(fd)
                if stat.S_ISREG(opened.st_mode):
                    os.set_blocking(fd, True)
                    tree.write(rel, data, opened.st_mode, opened.st_mtime)
    except (FileNotFoundError, NotADirectoryError):
        pass
    except OSError as exc:
        if exc.errno != errno.ELOOP:  # swapped for a symlink after the stat
            raise
    return False
