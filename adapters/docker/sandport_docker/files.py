"""Files in a container, moved as tar streams through the engine's archive API.

Reads, writes, ``mkdir``, ``upload`` and ``download`` use ``HEAD``/``GET``/``PUT
/containers/{id}/archive``: no exec, no base64, the bytes go over the engine socket as they
are. The engine resolves symlinks inside the container's root, so a path never escapes it.
Listing and removal have no archive counterpart; they run one small shell script each
(builtins plus one ``stat`` or ``rm``) through exec.

The blocking functions here take the SDK's ``APIClient`` and run in a worker thread
(through ``Engine.call``).
"""

from __future__ import annotations

import errno
import io
import os
import posixpath
import re
import stat as stat_module
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from sandport.errors import FileTooLarge, ProviderError
from sandport_docker.engine import NAME, api_error_text, docker_errors, docker_module, status_of

__all__ = [
    "LIST_SCRIPT",
    "REMOVE_SCRIPT",
    "ContainerGone",
    "Owner",
    "PathStat",
    "dir_tar",
    "file_tar",
    "get_file",
    "head",
    "parse_listing",
    "put",
    "tree_tar",
    "untar_to",
]

# Go's os.FileMode bits, as the engine reports them in X-Docker-Container-Path-Stat.
_GO_DIR = 1 << 31
_GO_SYMLINK = 1 << 27
_GO_DEVICE = 1 << 26
_GO_PIPE = 1 << 25
_GO_SOCKET = 1 << 24
_GO_SETUID = 1 << 23
_GO_SETGID = 1 << 22
_GO_CHARDEV = 1 << 21
_GO_STICKY = 1 << 20
_GO_IRREGULAR = 1 << 19
_GO_OTHER = _GO_DEVICE | _GO_PIPE | _GO_SOCKET | _GO_CHARDEV | _GO_IRREGULAR
_MAX_LINKS = 40
_STREAM_CHUNK = 2 * 1024 * 1024
_BLOCK = 512


class ContainerGone(Exception):
    """The archive API said the container does not exist."""


@dataclass(frozen=True)
class Owner:
    """Numeric owner of the files sandport writes: the sandbox's default user."""

    uid: int = 0
    gid: int = 0


@dataclass(frozen=True)
class PathStat:
    """One path as the engine describes it (the last symlink is not followed)."""

    name: str
    size: int
    mode: int
    mtime: datetime
    link_target: str

    @classmethod
    def from_header(cls, header: str) -> PathStat:
        data = docker_module.utils.decode_json_header(header)
        return cls(
            name=str(data.get("name", "")),
            size=int(data.get("size", 0)),
            mode=int(data.get("mode", 0)),
            mtime=_parse_time(str(data.get("mtime", ""))),
            link_target=str(data.get("linkTarget") or ""),
        )

    @property
    def type(self) -> Literal["file", "dir", "symlink", "other"]:
        if self.mode & _GO_DIR:
            return "dir"
        if self.mode & _GO_SYMLINK:
            return "symlink"
        if self.mode & _GO_OTHER:
            return "other"
        return "file"

    @property
    def permissions(self) -> int:
        bits = self.mode & 0o777
        if self.mode & _GO_SETUID:
            bits |= stat_module.S_ISUID
        if self.mode & _GO_SETGID:
            bits |= stat_module.S_ISGID
        if self.mode & _GO_STICKY:
            bits |= stat_module.S_ISVTX
        return bits

    def info(self, path: str) -> Any:
        from sandport.models import FileInfo

        name = posixpath.basename(path.rstrip("/")) or "/"
        return FileInfo(path=path, name=name, type=self.type, size=self.size, mode=self.permissions, mtime=self.mtime)


def _parse_time(text: str) -> datetime:
    """RFC 3339 with nanoseconds (Go's format) to a UTC datetime."""
    match = re.match(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)?$", text)
    if not match:
        return datetime.fromtimestamp(0, UTC)
    base, fraction, zone = match.groups()
    micro = (fraction or "0")[:6].ljust(6, "0")
    zone = "+00:00" if zone in (None, "Z") else zone
    return datetime.fromisoformat(f"{base}.{micro}{zone}").astimezone(UTC)


def _archive_url(api: Any, container: str) -> str:
    url: str = api._url("/containers/{0}/archive", container)
    return url


def _raise_for(exc: Any, path: str) -> None:
    """Turn an APIError from the archive endpoints into the error a filesystem would raise."""
    text = api_error_text(exc)
    lowered = text.lower()
    if "no such container" in lowered:
        raise ContainerGone(text) from exc
    if "could not find the file" in lowered or "no such file" in lowered:
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), path) from None
    if "not a directory" in lowered:
        raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), path) from None
    if "read-only" in lowered:
        raise PermissionError(errno.EROFS, os.strerror(errno.EROFS), path) from None
    if "permission denied" in lowered:
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), path) from None
    raise ProviderError(NAME, f"{path}: {text}") from exc


def head(api: Any, container: str, path: str) -> PathStat | None:
    """Describe ``path`` without following a final symlink; None if nothing is there."""
    response = api.head(_archive_url(api, container), params={"path": path})
    if response.status_code == 200:
        return PathStat.from_header(response.headers["X-Docker-Container-Path-Stat"])
    if response.status_code == 404:
        return None
    # HEAD answers carry no message: ask again with GET to learn what went wrong.
    response = api._get(_archive_url(api, container), params={"path": path}, stream=True)
    try:
        api._raise_for_status(response)
    except docker_errors.APIError as exc:
        _raise_for(exc, path)
    finally:
        response.close()
    raise ProviderError(NAME, f"{path}: the engine answered HEAD with status {response.status_code}")


def missing_reason(api: Any, container: str, path: str) -> None:
    """After a 404: raise ``ContainerGone`` if it was the container that was missing."""
    response = api._get(_archive_url(api, container), params={"path": path}, stream=True)
    try:
        api._raise_for_status(response)
    except docker_errors.APIError as exc:
        _raise_for(exc, path)
    finally:
        response.close()


def resolve(api: Any, container: str, path: str) -> tuple[str, PathStat | None]:
    """Follow symlinks (the engine gives each link's target fully resolved): the real path
    and its stat, or None if nothing is there (a dangling link gives its target)."""
    current = path
    for _ in range(_MAX_LINKS):
        found = head(api, container, current)
        if found is None or not found.link_target:
            return current, found
        current = found.link_target
    raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), path)


def get_file(api: Any, container: str, path: str, limit: int) -> bytes:
    """The content of a regular file (following symlinks)."""
    current = path
    for _ in range(_MAX_LINKS):
        response = api._get(_archive_url(api, container), params={"path": current}, stream=True)
        try:
            try:
                api._raise_for_status(response)
            except docker_errors.APIError as exc:
                _raise_for(exc, path)
            found = PathStat.from_header(response.headers["X-Docker-Container-Path-Stat"])
            if found.link_target:
                current = found.link_target
                continue
            if found.type == "dir":
                raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), path)
            if found.size > limit:
                raise FileTooLarge(path, found.size, limit)
            body = b"".join(response.iter_content(_STREAM_CHUNK, decode_unicode=False))
        finally:
            response.close()
        return _only_member(body, path)
    raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), path)


def _only_member(body: bytes, path: str) -> bytes:
    with tarfile.open(fileobj=io.BytesIO(body), mode="r:") as tar:
        member = tar.next()
        if member is None:
            raise ProviderError(NAME, f"{path}: the engine sent an empty archive")
        if not member.isfile():
            raise ProviderError(NAME, f"{path}: not a regular file (tar type {member.type!r})")
        view = memoryview(body)
        return bytes(view[member.offset_data : member.offset_data + member.size])


def put(api: Any, container: str, directory: str, data: bytes | Iterator[bytes]) -> None:
    """Extract a tar stream into ``directory`` (which must exist)."""
    try:
        api.put_archive(container, directory, data)
    except docker_errors.APIError as exc:
        _raise_for(exc, directory)


# -- building archives ---------------------------------------------------------------------


def _header(name: str, *, kind: bytes, size: int, mode: int, owner: Owner, linkname: str = "") -> bytes:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.size = size
    info.mode = mode
    info.uid, info.gid = owner.uid, owner.gid
    info.mtime = int(time.time())
    info.linkname = linkname
    return info.tobuf(format=tarfile.PAX_FORMAT)


def _padding(size: int) -> bytes:
    return b"\0" * (-size % _BLOCK)


_END = b"\0" * (2 * _BLOCK)


def dir_tar(names: list[str], owner: Owner, mode: int = 0o755) -> bytes:
    """An archive of empty directories (parents first)."""
    parts = [_header(name, kind=tarfile.DIRTYPE, size=0, mode=mode, owner=owner) for name in names]
    return b"".join([*parts, _END])


def file_tar(dirs: list[str], name: str, data: bytes, mode: int, owner: Owner) -> Iterator[bytes] | bytes:
    """An archive of ``dirs`` (created first) and one file. Large payloads are streamed
    without being copied."""
    head_bytes = b"".join(
        [*(_header(d, kind=tarfile.DIRTYPE, size=0, mode=0o755, owner=owner) for d in dirs),
         _header(name, kind=tarfile.REGTYPE, size=len(data), mode=mode, owner=owner)]
    )  # fmt: skip
    tail = _padding(len(data)) + _END
    if len(data) < 1024 * 1024:
        return head_bytes + data + tail
    view = memoryview(data)
    return iter([head_bytes, *(bytes(view[i : i + _STREAM_CHUNK]) for i in range(0, len(data), _STREAM_CHUNK)), tail])


class _Sink(io.RawIOBase):
    """A write-only file object that hands out what was written so far."""

    def __init__(self) -> None:
        super().__init__()
        self.parts: list[bytes] = []
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self.parts.append(bytes(data))
        self.size += len(data)
        return len(data)

    def take(self) -> bytes:
        data = b"".join(self.parts)
        self.parts, self.size = [], 0
        return data


def tree_tar(source: Path, arcname: str, owner: Owner, *, chunk: int = 256 * 1024) -> Iterator[bytes]:
    """Stream a local file or directory tree as a tar archive, entries named under
    ``arcname``; modes and symlinks kept, ownership set to ``owner``. Pieces are yielded as
    they are built, so the engine unpacks while the rest is still being read."""

    def own(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.uid, info.gid = owner.uid, owner.gid
        info.uname = info.gname = ""
        return info

    sink = _Sink()
    with tarfile.open(fileobj=sink, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        tar.add(source, arcname=arcname, recursive=False, filter=own)
        if source.is_dir() and not source.is_symlink():
            for root, dirs, files in os.walk(source):
                rel = Path(root).relative_to(source).as_posix()
                base = arcname if rel == "." else posixpath.join(arcname, rel)
                dirs.sort()
                links = [d for d in dirs if os.path.islink(os.path.join(root, d))]
                dirs[:] = [d for d in dirs if d not in links]
                for name in [*dirs, *links, *sorted(files)]:  # a directory entry precedes its contents
                    tar.add(os.path.join(root, name), arcname=posixpath.join(base, name), recursive=False, filter=own)
                    if sink.size >= chunk:
                        yield sink.take()
    yield sink.take()


class _ChunkReader(io.RawIOBase):
    """A readable file object over an iterator of byte chunks."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._buffer = b""

    def readable(self) -> bool:
        return True

    def readinto(self, target: Any) -> int:
        while not self._buffer:
            try:
                self._buffer = next(self._chunks)
            except StopIteration:
                return 0
        size = min(len(target), len(self._buffer))
        target[:size] = self._buffer[:size]
        self._buffer = self._buffer[size:]
        return size


def untar_to(api: Any, container: str, path: str, target: Path) -> None:
    """Download ``path`` (a file or a tree) from the container to ``target``.

    Members are renamed from the archive's top name to ``target``; modes are kept (less
    setuid/setgid), files are owned by whoever runs this. Skipped: names that would leave
    ``target``, links pointing outside the copied tree, and device files.
    """
    try:
        chunks, _ = api.get_archive(container, path, chunk_size=_STREAM_CHUNK)
    except docker_errors.APIError as exc:
        _raise_for(exc, path)
        raise
    target = target.absolute()
    top: str | None = None
    directories: list[tuple[str, int, float]] = []
    reader = io.BufferedReader(_ChunkReader(iter(chunks)), buffer_size=_STREAM_CHUNK)
    with tarfile.open(fileobj=reader, mode="r|") as tar:
        for member in tar:
            head_name, _, rel = member.name.rstrip("/").partition("/")
            if top is None:
                top = head_name
            if head_name != top or member.isdev() or ".." in rel.split("/") or rel.startswith("/"):
                continue
            member.name = posixpath.join(target.name, rel) if rel else target.name
            if member.islnk():  # hard link names are archive paths too
                link_top, _, link_rest = member.linkname.partition("/")
                if link_top != top or ".." in link_rest.split("/"):
                    continue
                member.linkname = posixpath.join(target.name, link_rest) if link_rest else target.name
            elif member.issym() and not _inside(member, target.name):
                continue  # a link out of the copied tree is not recreated here
            member.mode &= 0o1777
            member.uid, member.gid, member.uname, member.gname = os.getuid(), os.getgid(), "", ""
            target.parent.mkdir(parents=True, exist_ok=True)
            if member.isdir():  # modes last, so that a read-only directory can still be filled
                directories.append((member.name, member.mode, member.mtime))
                os.makedirs(target.parent / member.name, exist_ok=True)
                continue
            tar.extract(member, str(target.parent), set_attrs=True, filter="fully_trusted")
    for name, mode, mtime in reversed(directories):
        where = target.parent / name
        os.chmod(where, mode)
        os.utime(where, (mtime, mtime))


def _inside(member: tarfile.TarInfo, top: str) -> bool:
    """Whether a link member points inside the tree rooted at ``top`` (names relative)."""
    if member.linkname.startswith("/"):
        return False
    base = posixpath.dirname(member.name) if member.issym() else ""
    dest = posixpath.normpath(posixpath.join(base, member.linkname))
    return dest == top or dest.startswith(top + "/")


# -- scripts run through exec --------------------------------------------------------------

#: ``sh -c LIST_SCRIPT sh DIR``: prints the resolved directory, the entry count and the
#: names (NUL-terminated, from builtins), then one ``stat`` line per entry in the same order.
#: Exit 2: missing; 20: not a directory; 13: not readable.
LIST_SCRIPT = r"""
[ -e "$1" ] || exit 2
[ -d "$1" ] || exit 20
cd -P -- "$1" 2>/dev/null || exit 13
dir=$PWD
set --
for f in .* *; do
  case $f in .|..) continue ;; esac
  [ -e "$f" ] || [ -L "$f" ] || continue
  set -- "$@" "$f"
done
printf '%s\0%d\0' "$dir" $#
[ $# -eq 0 ] && exit 0
printf '%s\0' "$@"
exec stat -c '%f %s %Y %n' -- "$@"
"""

#: ``sh -c REMOVE_SCRIPT sh PATH RECURSIVE``: exit 2 missing, 39 non-empty directory.
REMOVE_SCRIPT = r"""
[ -e "$1" ] || [ -L "$1" ] || exit 2
if [ -d "$1" ] && [ ! -L "$1" ]; then
  if [ "$2" = 1 ]; then exec rm -rf -- "$1"; fi
  rmdir -- "$1" 2>/dev/null && exit 0
  for f in "$1"/* "$1"/.*; do
    case ${f##*/} in .|..) continue ;; esac
    [ -e "$f" ] || [ -L "$f" ] && exit 39
  done
  exec rmdir -- "$1"
fi
exec rm -f -- "$1"
"""


_ENTRY_TYPES: dict[int, Literal["file", "dir", "symlink", "other"]] = {
    stat_module.S_IFDIR: "dir",
    stat_module.S_IFREG: "file",
    stat_module.S_IFLNK: "symlink",
}


def parse_listing(output: bytes, path: str) -> list[Any]:
    """Turn LIST_SCRIPT's output into FileInfo entries."""
    from sandport.models import FileInfo

    fields = output.split(b"\0", 2)
    if len(fields) < 2:
        raise ProviderError(NAME, f"list_dir {path}: unexpected helper output {output[:200]!r}")
    directory = fields[0].decode("utf-8", "surrogateescape")
    count = int(fields[1])
    if count == 0:
        return []
    rest = fields[2]
    names: list[bytes] = []
    for _ in range(count):
        name, _, rest = rest.partition(b"\0")
        names.append(name)
    entries = []
    position = 0
    for name in names:
        match = re.compile(rb"([0-9a-f]+) (\d+) (\d+) " + re.escape(name) + rb"\n").match(rest, position)
        if match is None:
            continue  # removed between the glob and stat
        position = match.end()
        raw_mode, size, mtime = int(match[1], 16), int(match[2]), int(match[3])
        entry_type = _ENTRY_TYPES.get(stat_module.S_IFMT(raw_mode), "other")
        text = name.decode("utf-8", "surrogateescape")
        entries.append(
            FileInfo(
                path=posixpath.join(directory, text),
                name=text,
                type=entry_type,
                size=size,
                mode=stat_module.S_IMODE(raw_mode),
                mtime=datetime.fromtimestamp(mtime, UTC),
            )
        )
    return entries


def is_not_found(exc: BaseException) -> bool:
    return status_of(exc) == 404
