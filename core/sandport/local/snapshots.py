"""Local snapshots: a tar archive of a sandbox's ``fs`` directory, written and read so that
nothing the sandbox controls can make the host read or write anything outside it.

Snapshot ids are the provider's own (:func:`new_snapshot_id`); any other id is refused
before it comes near a path. :func:`pack` walks the tree through directory descriptors,
never following a symlink, while the sandbox may still be changing it. :func:`unpack` takes
only what :func:`pack` writes and extracts it without ever following a symlink either.
"""

from __future__ import annotations

import io
import logging
import os
import re
import secrets
import stat
import tarfile
from dataclasses import dataclass, field

from sandport.errors import SandboxNotFound
from sandport.local.tree import DirStack, open_dir

__all__ = ["InvalidSnapshotId", "UnsafeSnapshot", "check_snapshot_id", "new_snapshot_id", "pack", "unpack"]

log = logging.getLogger("sandport.local")

_ID = re.compile(r"snap-[0-9a-f]{12}")
#: The archive's top member; below it, exactly the directories ``work`` and ``tmp``.
ROOT = "fs"
_TOP = ("work", "tmp")
_CHUNK = 1 << 20


class InvalidSnapshotId(SandboxNotFound, ValueError):
    """A snapshot id this provider never makes, so no such snapshot exists (and the id is
    never used as a path)."""

    def __init__(self, provider: str, snapshot_id: str) -> None:
        super().__init__(provider, snapshot_id, what="snapshot")
        self.args = (f"{self.args[0]}: not a local snapshot id ('snap-' and 12 hex digits)",)


class UnsafeSnapshot(ValueError):
    """An archive holds something a snapshot written by :func:`pack` never does."""


def new_snapshot_id() -> str:
    return "snap-" + secrets.token_hex(6)


def check_snapshot_id(provider: str, snapshot_id: str) -> str:
    """Return ``snapshot_id`` if it has the form :func:`new_snapshot_id` gives, else raise
    :class:`InvalidSnapshotId`."""
    if not _ID.fullmatch(snapshot_id):
        raise InvalidSnapshotId(provider, snapshot_id)
    return snapshot_id


# -- writing -------------------------------------------------------------------------------


@dataclass
class _Pending:
    """A directory being archived: its member name and the entries still to add."""

    arcname: str
    names: list[str] = field(default_factory=list)


def pack(source: str | os.PathLike[str], archive: str | os.PathLike[str]) -> None:
    """Write the directory ``source`` to the tar file ``archive``, its members named
    ``fs/...``.

    Every entry is opened relative to its directory's descriptor without following
    symlinks: a symlink is archived as a symlink, sockets, devices and FIFOs are skipped, and
    an entry that vanishes or turns into something else while the sandbox runs is left out
    (or archived as what it became) instead of failing the snapshot. Files linked more than
    once are archived once, then as hard links to that first member.
    """
    links: dict[tuple[int, int], str] = {}
    root = open_dir(source)
    with DirStack(root, _Pending(ROOT)) as stack, tarfile.open(archive, "w", format=tarfile.PAX_FORMAT) as tar:
        tar.addfile(_header(ROOT, tarfile.DIRTYPE, os.fstat(root)))
        stack.data.names = sorted(os.listdir(root), reverse=True)
        while True:
            pending = stack.data
            if not pending.names:
                if stack.depth == 0:
                    break
                stack.pop()
                continue
            name = pending.names.pop()
            try:
                _add(tar, stack, name, f"{pending.arcname}/{name}", links)
            except (FileNotFoundError, NotADirectoryError):
                continue  # gone, or replaced by a symlink or file, since it was listed


def _add(
    tar: tarfile.TarFile, stack: DirStack[_Pending], name: str, arcname: str, links: dict[tuple[int, int], str]
) -> None:
    st = os.stat(name, dir_fd=stack.fd, follow_symlinks=False)
    if stat.S_ISLNK(st.st_mode):
        try:
            target = os.readlink(name, dir_fd=stack.fd)
        except OSError:  # EINVAL: no longer a symlink
            return
        tar.addfile(_header(arcname, tarfile.SYMTYPE, st, linkname=target))
    elif stat.S_ISDIR(st.st_mode):
        stack.push(name, _Pending(arcname))
        stack.data.names = sorted(os.listdir(stack.fd), reverse=True)
        tar.addfile(_header(arcname, tarfile.DIRTYPE, os.fstat(stack.fd)))
    elif stat.S_ISREG(st.st_mode):
        # O_NONBLOCK: a FIFO swapped in since the stat must not block the open.
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
        try:
            fd = os.open(name, flags, dir_fd=stack.fd)
        except OSError:  # ELOOP: a symlink now; ENXIO: a socket now
            return
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                return
            if st.st_nlink > 1:
                first = links.setdefault((st.st_dev, st.st_ino), arcname)
                if first != arcname:
                    tar.addfile(_header(arcname, tarfile.LNKTYPE, st, linkname=first))
                    return
            header = _header(arcname, tarfile.REGTYPE, st)
            header.size = st.st_size
            tar.addfile(header, io.BufferedReader(_Exactly(fd, st.st_size), _CHUNK))
        finally:
            os.close(fd)
    # Anything else (sockets, devices, FIFOs) is not part of a snapshot.


def _header(arcname: str, kind: bytes, st: os.stat_result, *, linkname: str = "") -> tarfile.TarInfo:
    header = tarfile.TarInfo(arcname)
    header.type = kind
    header.mode = stat.S_IMODE(st.st_mode)
    header.mtime = int(st.st_mtime)
    header.uid, header.gid = st.st_uid, st.st_gid
    header.linkname = linkname
    return header


class _Exactly(io.RawIOBase):
    """``size`` bytes of the file ``fd``: cut short if it grew since its size was taken, and
    padded with zeros if it shrank (as GNU tar does), so the archive stays well-formed."""

    def __init__(self, fd: int, size: int) -> None:
        self._fd = fd
        self._left = size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview | bytearray) -> int:  # type: ignore[override]
        view = memoryview(buffer).cast("B")
        wanted = min(len(view), self._left)
        got = 0
        while got < wanted:
            count = os.readv(self._fd, [view[got:wanted]])
            if count == 0:
                view[got:wanted] = bytes(wanted - got)
                break
            got += count
        self._left -= wanted
        return wanted


# -- reading -------------------------------------------------------------------------------


def unpack(
    archive: str | os.PathLike[str], dest: str | os.PathLike[str], *, owner: tuple[int, int] | None = None
) -> None:
    """Extract the tar file ``archive`` (written by :func:`pack`) into ``dest``.

    ``dest`` is a fresh empty directory that nothing else can write to meanwhile; the
    archive's ``fs/`` tree goes into it (``dest`` itself keeps its own mode and owner).
    The policy is the strictest one:

    - Member names are relative paths below ``fs/`` without ``..``; the top level holds
      only the directories ``work`` and ``tmp`` (both exist afterwards).
    - Nothing is opened or created through a symlink: each directory is entered with
      ``O_NOFOLLOW`` from its parent's descriptor, and a member below a symlink or a file
      is refused.
    - Symlinks are recreated as they are, whatever they point to: they are resolved in the
      sandbox's own view, where an absolute target means the sandbox's own path.
    - A hard link must point to a regular file extracted earlier from the same archive
      (checked by device and inode at link time).
    - Devices, FIFOs and other special files are skipped; setuid and setgid bits dropped.
    - Everything created belongs to ``owner`` (uid, gid), or to the caller if None.

    Raises:
        UnsafeSnapshot: a member breaks the policy (nothing is extracted past it).
    """
    dirs: dict[tuple[str, ...], tuple[int, float]] = {}  # path -> (mode, mtime), applied last
    files: dict[str, tuple[int, int]] = {}  # member name -> (device, inode), for hard links
    skipped: set[str] = set()
    with DirStack(open_dir(dest), None) as stack, tarfile.open(archive, "r:") as tar:
        for member in tar:
            path = _member_path(member.name)
            if not path and member.isdir():
                continue  # fs/ itself: dest keeps its own mode and owner
            if len(path) <= 1 and (not path or path[0] not in _TOP or not member.isdir()):
                raise UnsafeSnapshot(
                    f"{member.name!r}: a snapshot holds fs/ and, at its top, only the directories work and tmp"
                )
            if not (member.isreg() or member.isdir() or member.issym() or member.islnk()):
                skipped.add(member.name)
                continue
            if member.islnk() and member.linkname in skipped:
                skipped.add(member.name)
                continue
            parent = _enter(stack, path[:-1], dirs, owner)
            _make_room(parent, path[-1], member)
            if member.isdir():
                _mkdir(parent, path[-1], owner)
                dirs[path] = (member.mode, member.mtime)
            elif member.isreg():
                files[member.name] = _extract_file(tar, member, parent, path[-1], owner)
            elif member.issym():
                _symlink(member, parent, path[-1], owner)
            else:
                _hardlink(stack.root_fd, member, files.get(member.linkname), parent, path[-1])
        parent = _enter(stack, (), dirs, owner)
        for top, mode in zip(_TOP, (0o755, 0o1777), strict=True):
            if (top,) not in dirs:
                _mkdir(parent, top, owner)
                dirs[(top,)] = (mode, 0)
        for path in sorted(dirs, reverse=True):  # deepest first: a parent's mode may forbid writing
            mode, mtime = dirs[path]
            fd = open_dir(path[-1], _enter(stack, path[:-1], dirs, owner))
            try:
                os.fchmod(fd, _safe_mode(mode))
                os.utime(fd, (mtime, mtime))
            finally:
                os.close(fd)
    if skipped:
        log.warning("snapshot %s: left out %d device, FIFO or other special file(s)", archive, len(skipped))


def _member_path(name: str) -> tuple[str, ...]:
    parts = name.split("/")
    if parts[0] != ROOT or "\0" in name or any(p in ("", ".", "..") for p in parts[1:]):
        raise UnsafeSnapshot(f"{name!r} is not a path below {ROOT}/")
    return tuple(parts[1:])


def _safe_mode(mode: int) -> int:
    return mode & 0o1777  # permission bits and sticky; never setuid or setgid


def _own(owner: tuple[int, int] | None, fd: int | None = None, *, name: str = "", dir_fd: int | None = None) -> None:
    if owner is None:
        return
    if fd is not None:
        os.fchown(fd, *owner)
    else:
        os.chown(name, *owner, dir_fd=dir_fd, follow_symlinks=False)


def _enter(
    stack: DirStack[None],
    path: tuple[str, ...],
    dirs: dict[tuple[str, ...], tuple[int, float]],
    owner: tuple[int, int] | None,
) -> int:
    """Move ``stack`` to ``path`` (creating missing directories) and return its fd."""
    current = stack.names()
    common = 0
    while common < min(len(current), len(path)) and current[common] == path[common]:
        common += 1
    while stack.depth > common:
        if not stack.pop():
            raise UnsafeSnapshot("the tree being extracted changed under the extraction")
    for i in range(common, len(path)):
        name = path[i]
        try:
            stack.push(name, None)
        except FileNotFoundError:
            _mkdir(stack.fd, name, owner)
            dirs.setdefault(path[: i + 1], (0o755, 0))
            stack.push(name, None)
        except NotADirectoryError:
            raise UnsafeSnapshot(
                f"{ROOT}/{'/'.join(path[: i + 1])} is not a directory (a symlink or a file); "
                "nothing is extracted through it"
            ) from None
    return stack.fd


def _make_room(parent: int, name: str, member: tarfile.TarInfo) -> None:
    """Unlink a non-directory already at ``name`` (a later member wins, as in tar); a
    directory stays for a directory member and is refused for anything else."""
    try:
        st = os.stat(name, dir_fd=parent, follow_symlinks=False)
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(st.st_mode):
        os.unlink(name, dir_fd=parent)
    elif not member.isdir():
        raise UnsafeSnapshot(f"{member.name!r} would replace a directory")


def _mkdir(parent: int, name: str, owner: tuple[int, int] | None) -> None:
    try:
        os.mkdir(name, 0o700, dir_fd=parent)  # opened up when the modes are applied, last
    except FileExistsError:
        return
    _own(owner, name=name, dir_fd=parent)


def _extract_file(
    tar: tarfile.TarFile, member: tarfile.TarInfo, parent: int, name: str, owner: tuple[int, int] | None
) -> tuple[int, int]:
    source = tar.extractfile(member)
    assert source is not None
    fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=parent)
    try:
        while chunk := source.read(_CHUNK):
            view = memoryview(chunk)
            while view:
                view = view[os.write(fd, view) :]
        _own(owner, fd)
        os.fchmod(fd, _safe_mode(member.mode))
        os.utime(fd, (member.mtime, member.mtime))
        st = os.fstat(fd)
        return st.st_dev, st.st_ino
    finally:
        os.close(fd)


def _symlink(member: tarfile.TarInfo, parent: int, name: str, owner: tuple[int, int] | None) -> None:
    if not member.linkname:
        raise UnsafeSnapshot(f"{member.name!r} is a symlink to nothing")
    os.symlink(member.linkname, name, dir_fd=parent)
    _own(owner, name=name, dir_fd=parent)
    os.utime(name, (member.mtime, member.mtime), dir_fd=parent, follow_symlinks=False)


def _hardlink(root: int, member: tarfile.TarInfo, identity: tuple[int, int] | None, parent: int, name: str) -> None:
    if identity is None:
        raise UnsafeSnapshot(
            f"{member.name!r} is a hard link to {member.linkname!r}, which is not a file extracted "
            "earlier from this snapshot"
        )
    path = _member_path(member.linkname)
    source_dir = os.dup(root)
    try:
        for step in path[:-1]:
            child = open_dir(step, source_dir)
            os.close(source_dir)
            source_dir = child
        st = os.stat(path[-1], dir_fd=source_dir, follow_symlinks=False)
        if (st.st_dev, st.st_ino) != identity:
            raise UnsafeSnapshot(f"{member.name!r}: the hard link's target {member.linkname!r} was replaced")
        os.link(path[-1], name, src_dir_fd=source_dir, dst_dir_fd=parent, follow_symlinks=False)
    finally:
        os.close(source_dir)
