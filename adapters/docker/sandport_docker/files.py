"""Files in a container, moved as tar streams through the engine's archive API.

Reads, writes, ``mkdir``, ``upload`` and ``download`` use ``HEAD``/``GET``/``PUT
/containers/{id}/archive``: no exec, no base64, the bytes go over the engine socket as they
are. The engine resolves symlinks inside the container's root, so a path never escapes it.
Listing and removal have no archive counterpart; they run one small shell script each
(builtins plus one ``stat`` or ``rm``) through exec.

The blocking functions here take the SDK's ``APIClient`` and run in a worker thread
(through ``Engine.call``). Paths are ``str``, with names that are not UTF-8 surrogate-escaped
(as ``os.fsdecode`` gives them); they go to the engine as the bytes they stand for.
"""

from __future__ import annotations

import errno
import io
import itertools
import logging
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
from sandport.hostfiles import HostTree
from sandport_docker.engine import NAME, api_error_text, docker_errors, docker_module, status_of

__all__ = [
    "LIST_SCRIPT",
    "REMOVE_SCRIPT",
    "ContainerGone",
    "NotArchivable",
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
# Without this, requests asks for gzip and the engine compresses every archive it sends.
_IDENTITY = {"Accept-Encoding": "identity"}
_BLOCK = 512


log = logging.getLogger("sandport.docker")


class ContainerGone(Exception):
    """The archive API said the container does not exist."""


class NotArchivable(ProviderError):
    """The archive API cannot send this file or symlink: its name is not UTF-8.

    The engine passes the name to its archiver through JSON, which turns such bytes into
    U+FFFD, and then sends an empty archive. (A directory's contents still come through with
    their own names, and its stat with ``HEAD`` too.) Callers read such a path with a tool
    in the container instead."""

    def __init__(self, path: str) -> None:
        super().__init__(NAME, f"{path}: the engine's archive API cannot send a file whose name is not UTF-8")


def _archivable(path: str) -> bool:
    """Whether a GET of ``path``, if it is a file or symlink, sends its content."""
    try:
        posixpath.basename(path.rstrip("/")).encode()
    except UnicodeEncodeError:
        return False
    return True


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


def _query(path: str) -> dict[str, bytes]:
    """The archive endpoints' query: the path as bytes, so that requests percent-encodes a
    name that is not UTF-8 byte for byte (a ``str`` with surrogates cannot be encoded)."""
    return {"path": os.fsencode(path)}


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
    response = api.head(_archive_url(api, container), params=_query(path))
    if response.status_code == 200:
        return PathStat.from_header(response.headers["X-Docker-Container-Path-Stat"])
    if response.status_code == 404:
        return None
    missing_reason(api, container, path)  # HEAD answers carry no message: GET says what went wrong
    raise ProviderError(NAME, f"{path}: the engine answered HEAD with status {response.status_code}")


def _check(api: Any, response: Any, path: str) -> None:
    """Raise the error an archive-endpoint response reports about ``path``, if any."""
    try:
        api._raise_for_status(response)
    except docker_errors.APIError as exc:
        _raise_for(exc, path)


def missing_reason(api: Any, container: str, path: str) -> None:
    """Ask the archive endpoint with GET and raise what it reports (``ContainerGone`` if
    the container is missing); return quietly if it reports nothing wrong."""
    response = api._get(_archive_url(api, container), params=_query(path), stream=True, headers=_IDENTITY)
    try:
        _check(api, response, path)
    finally:
        response.close()


def _link_target(api: Any, container: str, path: str, found: PathStat) -> str:
    """Where the symlink at ``path`` leads, for the next request to resolve further.

    The engine reports the target resolved, but in a JSON header, where bytes that are not
    UTF-8 become U+FFFD. Then the link's own text, from its archive (raw bytes), is joined to
    the link's directory instead, and the engine resolves that."""
    if "\ufffd" not in found.link_target:
        return found.link_target
    if not _archivable(path):
        raise NotArchivable(path)
    response = api._get(_archive_url(api, container), params=_query(path), stream=True, headers=_IDENTITY)
    try:
        _check(api, response, path)
        member, _ = _first_member(response.iter_content(_STREAM_CHUNK, decode_unicode=False), path)
    finally:
        response.close()
    if not member.issym():
        raise ProviderError(NAME, f"{path}: the engine described a symlink but sent another kind of entry")
    return posixpath.join(posixpath.dirname(path.rstrip("/")) or "/", member.linkname)


def resolve(api: Any, container: str, path: str) -> tuple[str, PathStat | None]:
    """Follow symlinks (the engine gives each link's target fully resolved): the real path
    and its stat, or None if nothing is there (a dangling link gives its target)."""
    current = path
    for _ in range(_MAX_LINKS):
        found = head(api, container, current)
        if found is None or not found.link_target:
            return current, found
        current = _link_target(api, container, current, found)
    raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), path)


def get_file(api: Any, container: str, path: str, limit: int) -> bytes:
    """The content of a regular file (following symlinks)."""
    current = path
    for _ in range(_MAX_LINKS):
        response = api._get(_archive_url(api, container), params=_query(current), stream=True, headers=_IDENTITY)
        try:
            _check(api, response, path)
            found = PathStat.from_header(response.headers["X-Docker-Container-Path-Stat"])
            if found.link_target:
                current = _link_target(api, container, current, found)
                continue
            if found.type == "dir":
                raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), path)
            if found.type != "file":  # a FIFO, socket or device: never read (nor wait on) it
                raise _not_regular(path)
            if not _archivable(current):
                raise NotArchivable(current)
            if found.size > limit:
                raise FileTooLarge(path, found.size, limit)
            api._disable_socket_timeout(api._get_raw_response_socket(response))  # as get_archive does
            return _only_member(response.iter_content(_STREAM_CHUNK, decode_unicode=False), path)
        finally:
            response.close()
    raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), path)


def _first_member(chunks: Iterator[bytes], path: str) -> tuple[tarfile.TarInfo, bytes]:
    """The first entry of a tar stream, and the bytes read so far (at least its header)."""
    head = b""
    for chunk in chunks:
        head += chunk
        if len(head) >= 16 * 1024:
            break
    with tarfile.open(fileobj=io.BytesIO(head), mode="r:") as tar:
        try:
            member = tar.next()
        except tarfile.ReadError as exc:
            raise ProviderError(NAME, f"{path}: the engine sent a broken archive ({exc})") from None
    if member is None:
        raise ProviderError(NAME, f"{path}: the engine sent an empty archive")
    return member, head


def _only_member(chunks: Iterator[bytes], path: str) -> bytes:
    """The content of the single file in a tar stream, joined with one copy."""
    member, head = _first_member(chunks, path)
    if not member.isfile():
        raise _not_regular(path)
    parts, left = [], member.size
    first = head[member.offset_data : member.offset_data + left]
    for piece in itertools.chain([first], chunks):
        if len(piece) > left:
            piece = piece[:left]
        parts.append(piece)
        left -= len(piece)
        if not left:
            break
    if left:
        raise ProviderError(NAME, f"{path}: the archive ended {left} bytes early")
    return b"".join(parts)


def _not_regular(path: str) -> OSError:
    return OSError(errno.EINVAL, os.strerror(errno.EINVAL) + " (not a regular file)", path)


def put(api: Any, container: str, directory: str, data: bytes | Iterator[bytes]) -> None:
    """Extract a tar stream into ``directory`` (which must exist). No read timeout: the
    engine answers only once it has unpacked everything, however long that takes."""
    response = api._put(_archive_url(api, container), params=_query(directory), data=data, timeout=None)
    try:
        _check(api, response, directory)
    finally:
        response.close()


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


def file_tar(dirs: list[str], name: str, data: bytes, mode: int, owner: Owner) -> bytes:
    """An archive of ``dirs`` (created first) and one file, as one body: the engine takes a
    sized body faster than a chunked stream."""
    head_bytes = b"".join(
        [*(_header(d, kind=tarfile.DIRTYPE, size=0, mode=0o755, owner=owner) for d in dirs),
         _header(name, kind=tarfile.REGTYPE, size=len(data), mode=mode, owner=owner)]
    )  # fmt: skip
    return b"".join([head_bytes, data, _padding(len(data)), _END])


def _ustar(name: bytes, mode: int, owner: Owner, size: int, mtime: int, kind: bytes, link: bytes = b"") -> bytes | None:
    """A ustar header built directly (tarfile's generic path costs more than the engine's
    unpacking of small files); None when the entry needs PAX records instead."""
    prefix = b""
    if len(name) > 100:
        cut = name.rfind(b"/", 0, 156)
        if cut <= 0 or len(name) - cut - 1 > 100:
            return None
        prefix, name = name[:cut], name[cut + 1 :]
    if len(link) > 100 or size >= 8**11 or mtime >= 8**11 or max(owner.uid, owner.gid) >= 8**7:
        return None
    header = bytearray(512)
    header[0 : len(name)] = name
    header[100:108] = b"%07o\0" % (mode & 0o7777)
    header[108:116] = b"%07o\0" % owner.uid
    header[116:124] = b"%07o\0" % owner.gid
    header[124:136] = b"%011o\0" % size
    header[136:148] = b"%011o\0" % mtime
    header[148:156] = b"        "
    header[156:157] = kind
    header[157 : 157 + len(link)] = link
    header[257:265] = b"ustar\x0000"
    header[345 : 345 + len(prefix)] = prefix
    header[148:156] = b"%06o\0 " % sum(header)
    return bytes(header)


def tree_tar(source: Path, arcname: str, owner: Owner, *, chunk: int = 256 * 1024) -> Iterator[bytes]:
    """Stream a local file or directory tree as a tar archive, entries named under
    ``arcname``; permission bits (without setuid, setgid and sticky) and symlinks kept (hard
    links become copies), ownership set to ``owner``. Pieces are yielded as they are built,
    so the engine unpacks while the rest is still being read."""
    parts: list[bytes] = []
    pending = 0

    def entry(path: str, name: str) -> None:
        nonlocal pending
        st = os.lstat(path)
        mode, mtime = st.st_mode & 0o777, int(st.st_mtime)
        link = b""
        if stat_module.S_ISDIR(st.st_mode):
            kind, size, name = tarfile.DIRTYPE, 0, name + "/"
        elif stat_module.S_ISLNK(st.st_mode):
            kind, size, link = tarfile.SYMTYPE, 0, os.fsencode(os.readlink(path))
        elif stat_module.S_ISREG(st.st_mode):
            kind, size = tarfile.REGTYPE, st.st_size
        else:
            return  # sockets, FIFOs and devices are not copied
        header = _ustar(os.fsencode(name), mode, owner, size, mtime, kind, link)
        if header is None:
            info = tarfile.TarInfo(name)
            info.type, info.size, info.mode, info.mtime = kind, size, mode, mtime
            info.uid, info.gid, info.linkname = owner.uid, owner.gid, os.fsdecode(link)
            header = info.tobuf(format=tarfile.PAX_FORMAT)
        parts.append(header)
        pending += len(header)
        if kind == tarfile.REGTYPE and size:
            with open(path, "rb") as f:
                left = size
                while left > 0:  # exactly `size` bytes, even if the file changes meanwhile
                    data = f.read(min(left, _STREAM_CHUNK)) or b"\0" * min(left, _STREAM_CHUNK)
                    data = data[:left]
                    parts.append(data)
                    left -= len(data)
                    pending += len(data)
            parts.append(_padding(size))

    def take() -> bytes:
        nonlocal pending
        data = b"".join(parts)
        parts.clear()
        pending = 0
        return data

    entry(str(source), arcname)
    if source.is_dir() and not source.is_symlink():
        for root, dirs, files in os.walk(source):
            rel = Path(root).relative_to(source).as_posix()
            base = arcname if rel == "." else posixpath.join(arcname, rel)
            dirs.sort()
            links = [d for d in dirs if os.path.islink(os.path.join(root, d))]
            dirs[:] = [d for d in dirs if d not in links]
            for name in [*dirs, *links, *sorted(files)]:  # a directory entry precedes its contents
                entry(os.path.join(root, name), posixpath.join(base, name))
                if pending >= chunk:
                    yield take()
    parts.append(_END)
    yield take()


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

    Written through :class:`~sandport.hostfiles.HostTree`: nothing outside ``target`` or
    through a symlink already there, no setuid, setgid or sticky bit, symlinks only where
    they resolve inside ``target`` on this host, hard links only within the download.
    Members are taken relative to the archive's top entry; devices and FIFOs are skipped, and
    so are names with ``..`` (logged). Files belong to whoever runs this.
    """
    try:
        chunks, found = api.get_archive(container, os.fsencode(path), chunk_size=_STREAM_CHUNK)
    except docker_errors.APIError as exc:
        _raise_for(exc, path)
        raise
    if not _archivable(path) and not int((found or {}).get("mode", 0)) & _GO_DIR:
        raise NotArchivable(path)
    top: str | None = None
    reader = io.BufferedReader(_ChunkReader(iter(chunks)), buffer_size=_STREAM_CHUNK)
    with tarfile.open(fileobj=reader, mode="r|") as tar, HostTree(target) as tree:
        for member in tar:
            head_name, _, rel = member.name.rstrip("/").partition("/")
            top = head_name if top is None else top
            if head_name != top:
                continue
            try:
                _extract(tar, tree, member, rel, top)
            except ValueError as exc:
                log.warning("skipped %r from the archive of %s: %s", member.name, path, exc)


def _extract(tar: tarfile.TarFile, tree: HostTree, member: tarfile.TarInfo, rel: str, top: str) -> None:
    if member.isdir():
        tree.mkdir(rel, member.mode, member.mtime)
    elif member.isreg():
        data = tar.extractfile(member)
        assert data is not None
        tree.write(rel, data, member.mode, member.mtime)
    elif member.issym():
        tree.symlink(rel, member.linkname)
    elif member.islnk():  # hard link names are archive paths too
        link_top, _, link_rel = member.linkname.rstrip("/").partition("/")
        if link_top == top:
            tree.hardlink(rel, link_rel)


# -- scripts run through exec --------------------------------------------------------------

#: ``sh -c LIST_SCRIPT sh DIR``: prints the resolved directory, the entry count and the
#: names (NUL-terminated, from builtins), then one ``stat`` line per entry in the same order.
#: Exit 2: missing; 20: not a directory; 13: not readable.
LIST_SCRIPT = r"""
[ -e "$1" ] || exit 2
[ -d "$1" ] || exit 20
cd -P -- "$1" 2>&- || exit 13
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
  rmdir -- "$1" 2>&- && exit 0
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
