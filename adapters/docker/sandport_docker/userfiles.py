"""File operations with the rights of a sandbox's non-root default user.

The archive API acts as root and follows symlinks as root: in a sandbox whose programs run
as an ordinary user, a link planted in the workdir would let ``read_file`` return
``/etc/shadow`` or ``write_file`` create ``/etc/ld.so.preload``. So when the default user is
not root, every file operation runs inside the container *as that user*, and the kernel
decides what it may touch, exactly as for the user's own commands:

- ``read_file``, ``stat``, ``mkdir`` (and ``list_dir``, ``remove``) are small scripts in a
  helper shell kept open as the user (about a millisecond each);
- ``write_file`` is one exec as the user that streams the data through its stdin into a
  temporary file next to the target, checks its size, and renames it over the target;
- ``upload`` streams a tar archive into ``tar -x`` run as the user (one file at a time
  when the image has no ``tar``); a download is the core's walk over these operations,
  with large files streamed by ``file_data``.

Root sandboxes keep the archive API: their programs are root already, and the engine keeps
every path inside the container.
"""

from __future__ import annotations

import errno
import os
import posixpath
import secrets as secrets_module
import stat as stat_module
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Literal

import anyio

from sandport.errors import FileTooLarge, ProviderError
from sandport.models import ExecResult, FileInfo
from sandport_docker import files
from sandport_docker.engine import NAME
from sandport_docker.helper import ENV, HelperResult

if TYPE_CHECKING:
    from sandport_docker.sandbox import DockerSandbox

__all__ = ["file_data", "mkdir", "read_file", "stat", "upload", "write_file"]

_CHUNK = 1024 * 1024
#: Files up to this size are downloaded through the helper shell, bigger ones streamed.
_SMALL_FILE = 1024 * 1024

# Exit statuses the scripts below use for what they detect themselves.
_CODES: dict[int, tuple[type[OSError], int, str]] = {
    2: (FileNotFoundError, errno.ENOENT, os.strerror(errno.ENOENT)),
    5: (OSError, errno.EIO, "the transfer broke off; nothing was changed"),
    13: (PermissionError, errno.EACCES, os.strerror(errno.EACCES)),
    17: (FileExistsError, errno.EEXIST, os.strerror(errno.EEXIST)),
    20: (NotADirectoryError, errno.ENOTDIR, os.strerror(errno.ENOTDIR)),
    21: (IsADirectoryError, errno.EISDIR, os.strerror(errno.EISDIR)),
    22: (OSError, errno.EINVAL, os.strerror(errno.EINVAL) + " (not a regular file)"),
    40: (OSError, errno.ELOOP, os.strerror(errno.ELOOP)),
}
# Otherwise the tools' own (LC_ALL=C) messages say what went wrong.
_MESSAGES: list[tuple[str, type[OSError], int]] = [
    ("permission denied", PermissionError, errno.EACCES),
    ("operation not permitted", PermissionError, errno.EPERM),
    ("read-only file system", PermissionError, errno.EROFS),
    ("not a directory", NotADirectoryError, errno.ENOTDIR),
    ("is a directory", IsADirectoryError, errno.EISDIR),
    ("file exists", FileExistsError, errno.EEXIST),
    ("no such file", FileNotFoundError, errno.ENOENT),
    ("too many levels of symbolic links", OSError, errno.ELOOP),
    ("no space left", OSError, errno.ENOSPC),
]

#: ``READ_SCRIPT PATH LIMIT``: the content, at most LIMIT + 1 bytes; exit 27 with the size
#: on stdout if the file is larger than LIMIT.
READ_SCRIPT = r"""
[ -d "$1" ] && exit 21
if [ -e "$1" ] && [ ! -f "$1" ]; then exit 22; fi
size=$(stat -L -c %s -- "$1") || exit 1
[ "$size" -le "$2" ] || { printf %s "$size"; exit 27; }
exec head -c "$(($2 + 1))" -- "$1"
"""
#: ``STAT_SCRIPT PATH``: "<hex mode> <size> <mtime>" of what PATH leads to, then its real path.
STAT_SCRIPT = r"""
stat -L -c '%f %s %Y' -- "$1" || exit 1
exec readlink -f -- "$1"
"""
#: ``MKDIR_SCRIPT PATH PARENTS EXIST_OK``.
MKDIR_SCRIPT = r"""
if [ -d "$1" ]; then [ "$3" = 1 ] && exit 0; exit 17; fi
if [ -e "$1" ] || [ -L "$1" ]; then exit 17; fi
if [ "$2" = 1 ]; then exec mkdir -p -- "$1"; fi
exec mkdir -- "$1"
"""
#: ``WRITE_SCRIPT PATH SIZE MODE PARENTS TEMP`` with the data on stdin: follows PATH's
#: symlinks (as the user), writes TEMP next to the real target, checks that SIZE bytes
#: arrived, sets MODE (empty: the replaced file's, else 644) and renames it over the target.
WRITE_SCRIPT = r"""
t=$1 n=0
while [ -L "$t" ]; do
  n=$((n + 1)); [ $n -le 40 ] || exit 40
  l=$(readlink -- "$t") || exit 1
  case $l in /*) t=$l ;; *) t=${t%/*}/$l ;; esac
done
[ -d "$t" ] && exit 21
d=${t%/*}; d=${d:-/}
if [ ! -d "$d" ]; then
  [ "$4" = 1 ] || exit 2
  mkdir -p -- "$d" || exit 1
fi
m=$3
if [ -z "$m" ]; then
  if [ -e "$t" ]; then m=$(stat -L -c %a -- "$t") || exit 1; else m=644; fi
fi
tmp=$d/$5
cat > "$tmp" || { rm -f -- "$tmp"; exit 1; }
[ "$(stat -c %s -- "$tmp")" = "$2" ] || { rm -f -- "$tmp"; exit 5; }
chmod -- "$m" "$tmp" && mv -f -T -- "$tmp" "$t" || { rm -f -- "$tmp"; exit 1; }
"""
#: ``UNTAR_SCRIPT DIR`` with a tar stream on stdin; exit 127 if the image has no tar.
UNTAR_SCRIPT = r"""
[ -n "$(command -v tar)" ] || exit 127  # (not >&-: printing to a closed fd fails)
cd -- "$1" || exit 1
exec tar -x -o -p -f -
"""


def _error(code: int, message: str, path: str, *, codes: bool = True) -> Exception:
    """The exception for a script's exit status ``code`` (one of ours if ``codes``) and its
    stderr ``message``."""
    if codes and code in _CODES:
        cls, number, text = _CODES[code]
        return cls(number, text, path)
    lowered = message.lower()
    for needle, cls, number in _MESSAGES:
        if needle in lowered:
            return cls(number, os.strerror(number), path)
    return ProviderError(NAME, f"{path}: {message[:500] or f'exited with status {code}'}")


def _check(result: HelperResult | ExecResult, path: str, *, codes: bool = True) -> None:
    if result.exit_code != 0:
        raise _error(result.exit_code, result.stderr.decode("utf-8", "replace").strip(), path, codes=codes)


async def read_file(sandbox: DockerSandbox, path: str, limit: int) -> bytes:
    """The file's bytes, read as the user; ``FileTooLarge`` beyond ``limit``."""
    result = await sandbox._file_helper(READ_SCRIPT, path, str(limit), limit=limit + 4096)
    if result.exit_code == 27:
        raise FileTooLarge(path, int(result.stdout or b"0"), limit)
    _check(result, path)
    if len(result.stdout) > limit:  # it grew after its size was checked
        raise FileTooLarge(path, len(result.stdout), limit)
    return result.stdout


async def stat(sandbox: DockerSandbox, path: str) -> FileInfo:
    """What ``path`` leads to (symlinks followed), as the user sees it."""
    result = await sandbox._file_helper(STAT_SCRIPT, path)
    _check(result, path)
    head, _, real = result.stdout.decode("utf-8", "surrogateescape").partition("\n")
    try:
        raw_mode, size, mtime = head.split()
        mode = int(raw_mode, 16)
        kind: Literal["file", "dir", "other"] = (
            "dir" if stat_module.S_ISDIR(mode) else "file" if stat_module.S_ISREG(mode) else "other"
        )
        real = real.rstrip("\n") or path
        return FileInfo(
            path=real,
            name=posixpath.basename(real.rstrip("/")) or "/",
            type=kind,
            size=int(size),
            mode=stat_module.S_IMODE(mode),
            mtime=datetime.fromtimestamp(int(mtime), UTC),
        )
    except ValueError:
        raise ProviderError(NAME, f"stat {path}: unexpected helper output {result.stdout[:200]!r}") from None


async def mkdir(sandbox: DockerSandbox, path: str, *, parents: bool, exist_ok: bool) -> None:
    result = await sandbox._file_helper(MKDIR_SCRIPT, path, "1" if parents else "0", "1" if exist_ok else "0")
    _check(result, path)


def _script(script: str, *args: str) -> list[str]:
    """An argv running ``script`` with ``args`` as ``$1``... An exec's argv reaches the
    engine as JSON, which cannot carry bytes that are not UTF-8 (a surrogate-escaped name):
    such args are spelled in the script as ``printf`` octal escapes instead."""
    try:
        for arg in args:
            arg.encode()
    except UnicodeEncodeError:
        pass
    else:
        return ["/bin/sh", "-c", script, "sh", *args]
    words = ["".join(f"\\{b:03o}" for b in os.fsencode(arg)) for arg in args]
    # The x keeps a trailing newline of a name from being eaten by $(...).
    setters = "".join(f"_sp{i}=$(printf '{w}x'); _sp{i}=${{_sp{i}%x}}\n" for i, w in enumerate(words))
    return ["/bin/sh", "-c", setters + "set -- " + " ".join(f'"$_sp{i}"' for i in range(len(args))) + "\n" + script]


async def _feed(sandbox: DockerSandbox, argv: list[str], stream: Iterator[bytes]) -> ExecResult:
    """Run ``argv`` as the user with ``stream`` (pulled in a worker thread) on its stdin."""
    process = await sandbox._spawn(argv, cwd="/", env=ENV, user=sandbox.default_user, stdin=True)
    try:
        while (chunk := await anyio.to_thread.run_sync(next, stream, None)) is not None:
            await process.write_stdin(chunk)
    except BrokenPipeError:
        pass  # it stopped reading: its exit status says why
    finally:
        with anyio.CancelScope(shield=True):
            await process.close_stdin()
    return await process.wait()


async def write_file(sandbox: DockerSandbox, path: str, data: bytes, *, mode: int | None, parents: bool) -> None:
    """Atomically replace ``path`` (following symlinks) with ``data``, as the user."""
    temp = f".sandport-{secrets_module.token_hex(6)}.tmp"
    argv = _script(WRITE_SCRIPT, path, str(len(data)), "" if mode is None else f"{mode:o}", "1" if parents else "0",
                   temp)  # fmt: skip
    chunks = (data[i : i + _CHUNK] for i in range(0, len(data), _CHUNK))
    _check(await _feed(sandbox, argv, chunks), path)


async def upload(sandbox: DockerSandbox, source: Path, target: str) -> None:
    """Create or replace ``target`` with a local file or tree, as the user."""
    try:
        found: FileInfo | None = await stat(sandbox, target)
    except FileNotFoundError:
        found = None
    if found is not None:
        target = found.path
        if found.type == "dir" and not source.is_dir():
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), target)  # as on local: nothing changed
        if found.type == "dir" or source.is_dir():
            await sandbox._remove(target, recursive=True)  # "created or replaced", never merged
    parent, name = posixpath.split(target)
    await mkdir(sandbox, parent or "/", parents=True, exist_ok=True)
    stream = files.tree_tar(source, name, await sandbox._file_owner())
    result = await _feed(sandbox, _script(UNTAR_SCRIPT, parent or "/"), stream)
    if result.exit_code != 127:
        _check(result, target, codes=False)  # tar's own statuses, not the scripts'
        return
    await _walk_upload(sandbox, source, target)


async def _walk_upload(sandbox: DockerSandbox, source: Path, target: str) -> None:
    """One operation per entry, for images without ``tar``."""
    if source.is_symlink():
        await sandbox._symlink(os.readlink(source), target)
    elif source.is_dir():
        await mkdir(sandbox, target, parents=True, exist_ok=True)
        for child in sorted(source.iterdir()):
            await _walk_upload(sandbox, child, posixpath.join(target, child.name))
        await sandbox._chmod(target, source.stat().st_mode & 0o777)
    elif source.is_file():
        data = await anyio.Path(source).read_bytes()
        await write_file(sandbox, target, data, mode=source.stat().st_mode & 0o777, parents=True)


async def file_data(sandbox: DockerSandbox, path: str, info: FileInfo) -> bytes | IO[bytes]:
    """A file's content for a download, read as the user: bytes if small, else spooled (to
    disk past a few MiB); the caller closes it."""
    if info.size <= _SMALL_FILE:
        return await read_file(sandbox, path, _SMALL_FILE)
    # Never more than the size seen by stat, whatever the path turns into meanwhile.
    argv = _script('exec head -c "$1" -- "$2"', str(info.size), path)
    process = await sandbox._spawn(argv, cwd="/", env=ENV, user=sandbox.default_user, stdin=False)
    spool: IO[bytes] = tempfile.SpooledTemporaryFile(max_size=8 * _SMALL_FILE)  # noqa: SIM115 (closed by the caller)
    try:
        async for chunk in process:
            if chunk.stream == "stdout":
                spool.write(chunk.data)
        _check(await process.wait(), path)
    except BaseException:
        spool.close()
        raise
    spool.seek(0)
    return spool
