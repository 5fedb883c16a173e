"""``sandport cp``: files and whole trees between this host and a sandbox.

Either side is ``ID:path`` (a path in the sandbox, relative to its workdir unless absolute),
the other a local path. As with ``cp -r``: when the destination is an existing directory
(or ends with ``/``), the source is copied *into* it under its own name; otherwise the
destination becomes the copy.
"""

from __future__ import annotations

import errno
import os
import posixpath
import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import typer
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)

from sandport.cli.output import human_bytes, stderr_console
from sandport.provider import Provider
from sandport.sandbox import Sandbox

__all__ = ["Endpoint", "copy", "parse_endpoint"]

#: Transfers of directories or of files over this size get a progress display.
LARGE = 1024 * 1024
_REMOTE = re.compile(r"^(?P<id>[A-Za-z0-9][A-Za-z0-9_.-]*):(?P<path>.*)$", re.DOTALL)


@dataclass(frozen=True)
class Endpoint:
    """One side of a copy: a local path (``sandbox_id`` None) or a path in a sandbox."""

    sandbox_id: str | None
    path: str

    def __str__(self) -> str:
        return self.path if self.sandbox_id is None else f"{self.sandbox_id}:{self.path}"


def parse_endpoint(text: str) -> Endpoint:
    """``ID:path`` is in a sandbox; anything else is local. Write ``./a:b`` for a local path
    with a colon."""
    if not text:
        raise typer.BadParameter("empty path")
    match = _REMOTE.match(text)
    if match is None or text.startswith(("/", ".", "~")):
        return Endpoint(None, text)
    return Endpoint(match["id"], match["path"] or ".")


def _tree_size(path: Path) -> tuple[int, int]:
    """(regular files, bytes) under ``path`` (or of ``path`` itself); symlinks not followed."""
    if path.is_symlink() or not path.is_dir():
        return (1, path.lstat().st_size) if path.is_file() and not path.is_symlink() else (0, 0)
    files = size = 0
    for root, _dirs, names in os.walk(path):
        for name in names:
            full = os.path.join(root, name)
            if os.path.isfile(full) and not os.path.islink(full):
                files += 1
                size += os.lstat(full).st_size
    return files, size


def _remote_abs(sandbox: Sandbox, path: str) -> str:
    full = path if path.startswith("/") else posixpath.join(sandbox.spec.workdir, path)
    return posixpath.normpath(full) if full != "/" else full


async def _remote_is_dir(sandbox: Sandbox, path: str) -> bool:
    try:
        return (await sandbox.stat(path)).is_dir
    except (FileNotFoundError, NotADirectoryError):
        return False


@asynccontextmanager
async def _progress(
    enabled: bool, description: str, total: int | None, poll: Callable[[], int] | None = None
) -> AsyncIterator[None]:
    """A transient spinner (a bar when the total is known) on stderr while the body runs."""
    if not enabled:
        yield
        return
    columns: list[ProgressColumn] = [SpinnerColumn(), TextColumn("{task.description}")]
    if total:
        columns.append(BarColumn())
    if poll is not None:
        columns.append(DownloadColumn())
    columns.append(TimeElapsedColumn())
    with Progress(*columns, console=stderr_console(), transient=True) as progress:
        task = progress.add_task(description, total=total)
        if poll is None:
            yield
            return

        async def watch() -> None:
            while True:
                done = await anyio.to_thread.run_sync(poll)
                progress.update(task, completed=done)
                await anyio.sleep(0.2)

        async with anyio.create_task_group() as tg:
            tg.start_soon(watch)
            try:
                yield
            finally:
                tg.cancel_scope.cancel()


def _counts(kind: str, files: int, size: int) -> str:
    if kind == "dir":
        return f"{files} file{'s' if files != 1 else ''}, {human_bytes(size)}"
    return human_bytes(size)


async def copy(provider: Provider, source: Endpoint, destination: Endpoint, *, progress: bool) -> dict[str, Any]:
    """Copy between host and sandbox; returns what was copied (for ``--json`` and the summary).

    Raises:
        typer.BadParameter: both sides local, or both in a sandbox.
        FileNotFoundError: the source does not exist.
        SandboxNotFound, SandboxGone: no such sandbox.
    """
    if (source.sandbox_id is None) == (destination.sandbox_id is None):
        raise typer.BadParameter("exactly one of SRC and DST must be ID:path (a path in a sandbox); the other is local")
    if destination.sandbox_id is not None:
        return await _upload(provider, Path(source.path), destination.sandbox_id, destination.path, progress)
    assert source.sandbox_id is not None
    return await _download(provider, source.sandbox_id, source.path, destination.path, progress)


async def _upload(provider: Provider, local: Path, sandbox_id: str, path: str, progress: bool) -> dict[str, Any]:
    if not local.exists() and not local.is_symlink():
        raise FileNotFoundError(errno.ENOENT, "No such file or directory", str(local))
    sandbox = await provider.connect(sandbox_id)
    remote = _remote_abs(sandbox, path)
    if path.endswith("/") or await _remote_is_dir(sandbox, remote):
        remote = posixpath.join(remote, os.path.basename(os.path.abspath(local)))
    kind = "dir" if local.is_dir() and not local.is_symlink() else "file"
    files, size = await anyio.to_thread.run_sync(_tree_size, local)
    description = f"uploading {local} ({_counts(kind, files, size)}) to {sandbox_id}:{remote}"
    async with _progress(progress and (kind == "dir" or size > LARGE), description, None):
        await sandbox.upload(local, remote)
    return {
        "direction": "upload",
        "provider": provider.name,
        "sandbox_id": sandbox_id,
        "source": str(local.absolute()),
        "destination": remote,
        "type": kind,
        "files": files,
        "bytes": size,
    }


async def _download(provider: Provider, sandbox_id: str, path: str, local_text: str, progress: bool) -> dict[str, Any]:
    sandbox = await provider.connect(sandbox_id)
    remote = _remote_abs(sandbox, path)
    info = await sandbox.stat(remote)
    local = Path(local_text)
    if local_text.endswith(("/", os.sep)) or local.is_dir():
        name = posixpath.basename(remote)
        local = local / name if name else local
    kind = "dir" if info.is_dir else "file"
    fresh = not local.exists()
    total = info.size if kind == "file" else None
    poll = (lambda: _tree_size(local)[1]) if fresh else None
    description = f"downloading {sandbox_id}:{remote}" + (f" ({human_bytes(info.size)})" if total else "")
    async with _progress(progress and (kind == "dir" or info.size > LARGE), description, total, poll):
        await sandbox.download(remote, local)
    files, size = await anyio.to_thread.run_sync(_tree_size, local)
    return {
        "direction": "download",
        "provider": provider.name,
        "sandbox_id": sandbox_id,
        "source": remote,
        "destination": str(local.absolute()),
        "type": kind,
        "files": files,
        "bytes": size,
    }


def summary(copied: dict[str, Any]) -> str:
    """One line for people: what went where."""
    if copied["direction"] == "upload":
        where = f"{copied['source']} -> {copied['sandbox_id']}:{copied['destination']}"
    else:
        where = f"{copied['sandbox_id']}:{copied['source']} -> {copied['destination']}"
    return f"copied {_counts(copied['type'], copied['files'], copied['bytes'])}: {where}"
