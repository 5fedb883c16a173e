"""sandport.hostfiles: trees from a hostile sandbox are written only below the destination."""

from __future__ import annotations

import os
import posixpath
import stat
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import anyio
import pytest

from sandport.hostfiles import HostTree, copy_tree
from sandport.models import FileInfo, SandboxInfo, SandboxSpec
from sandport.process import Process
from sandport.sandbox import Sandbox
from sandport.testing._support import Canary


def links_out(dest: Path) -> list[str]:
    """Symlinks under ``dest`` whose target, as the host resolves it, is outside ``dest``."""
    root = dest.resolve()
    found = []
    for directory, dirs, files in os.walk(dest):
        for name in dirs + files:
            path = Path(directory, name)
            if path.is_symlink():
                resolved = Path(os.path.realpath(path))
                if resolved != root and root not in resolved.parents:
                    found.append(f"{path.relative_to(dest)} -> {os.readlink(path)}")
    return found


def chain(tree: HostTree, hops: int) -> None:
    """``x -> .``, ``y0 -> x/..``, ``y1 -> y0/..``...: each hop climbs one real directory
    on a host that follows them; textually every one stays inside."""
    tree.symlink("x", ".")
    tree.symlink("y0", "x/..")
    for i in range(1, hops):
        tree.symlink(f"y{i}", f"y{i - 1}/..")


def test_symlink_chain_cannot_lead_out_even_across_two_transfers(tmp_path: Path) -> None:
    canary = Canary(tmp_path / "host")
    dest = tmp_path / "a" / "b" / "dest"
    with HostTree(dest) as tree:
        tree.mkdir()
        chain(tree, 8)
        tree.symlink("e", "y2/host/canary.txt")  # y2 is tmp_path on a host that follows the chain
        tree.symlink("d", "y2/host")
        tree.write("plain.txt", b"plain")
    assert links_out(dest) == []
    assert (dest / "x").is_symlink() and (dest / "plain.txt").read_bytes() == b"plain"
    with HostTree(dest) as tree:
        tree.mkdir()
        tree.write("e", b"pwned")
        tree.write("d/new.txt", b"pwned")
        chain(tree, 8)
    assert canary.intact()
    assert (dest / "e").read_bytes() == b"pwned" and not (dest / "e").is_symlink()
    assert links_out(dest) == []


def test_links_from_an_earlier_transfer_are_rechecked(tmp_path: Path) -> None:
    """``a -> m/../x`` is harmless while ``m`` is missing; a later ``m -> .`` would make it
    lead out of the destination, so one of them must go."""
    dest = tmp_path / "dest"
    with HostTree(dest) as tree:
        tree.mkdir()
        tree.symlink("a", "m/../x")
    assert (dest / "a").is_symlink()
    with HostTree(dest) as tree:
        tree.mkdir()
        tree.symlink("m", ".")
    assert links_out(dest) == []


def test_users_own_links_out_are_left_alone(tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "mine").symlink_to("/usr")
    with HostTree(dest) as tree:
        tree.mkdir()
        tree.symlink("through", "mine/bin")  # leads out through the user's link: refused
        tree.symlink("fine", "sub")
        tree.mkdir("sub")
    assert os.readlink(dest / "mine") == "/usr"
    assert not (dest / "through").exists() and (dest / "fine").is_symlink()


def test_writes_replace_symlinks_instead_of_following_them(tmp_path: Path) -> None:
    canary = Canary(tmp_path / "host")
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "file").symlink_to(canary.file)
    (dest / "dir").symlink_to(canary.dir)
    with HostTree(dest) as tree:
        tree.mkdir()
        tree.write("file", b"pwned")
        tree.write("dir/new.txt", b"pwned")
        tree.write("other/deeper/x.txt", b"x")
    assert canary.intact()
    assert (dest / "file").read_bytes() == b"pwned" and (dest / "dir").is_dir()
    assert not (dest / "dir").is_symlink()


def test_modes_lose_setuid_setgid_and_sticky(tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    with HostTree(dest) as tree:
        tree.mkdir("", 0o1777)
        tree.write("suid", b"#!/bin/sh\n", 0o4755)
        tree.write("sgid", b"", 0o2750)
        tree.mkdir("ro", 0o2555)
        tree.write("ro/inside", b"filled before the directory became read-only", 0o444)
    modes = {p.name: stat.S_IMODE(p.lstat().st_mode) for p in [dest, *dest.rglob("*")]}
    assert modes == {"dest": 0o777, "suid": 0o755, "sgid": 0o750, "ro": 0o555, "inside": 0o444}


def test_hard_links_only_to_files_of_the_same_transfer(tmp_path: Path) -> None:
    canary = Canary(tmp_path / "host")
    dest = tmp_path / "dest"
    with HostTree(dest) as tree:
        tree.mkdir()
        tree.write("one", b"1")
        assert tree.hardlink("two", "one")
        assert not tree.hardlink("three", str(canary.file))
        assert not tree.hardlink("four", "../host/canary.txt".replace("..", "x"))
    assert (dest / "one").stat().st_ino == (dest / "two").stat().st_ino
    assert sorted(p.name for p in dest.iterdir()) == ["one", "two"]


def test_dotdot_and_file_over_directory_are_refused(tmp_path: Path) -> None:
    with HostTree(tmp_path / "dest") as tree:
        tree.mkdir("sub")
        with pytest.raises(ValueError):
            tree.write("../escaped", b"x")
        with pytest.raises(IsADirectoryError):
            tree.write("sub", b"x")
    assert not (tmp_path / "escaped").exists()


def test_single_file_destination(tmp_path: Path) -> None:
    with HostTree(tmp_path / "new" / "file.bin") as tree:
        tree.write("", b"data", 0o6755)
    copied = tmp_path / "new" / "file.bin"
    assert copied.read_bytes() == b"data" and stat.S_IMODE(copied.stat().st_mode) == 0o755


def deep(root: Path, depth: int) -> Path:
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(depth):
            os.mkdir("d", dir_fd=fd)
            child = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = child
        leaf = os.open("leaf.txt", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd)
        os.write(leaf, b"bottom\n")
        os.close(leaf)
    finally:
        os.close(fd)
    return root.joinpath(*["d"] * depth, "leaf.txt")


def test_deep_trees_copy_without_recursion(tmp_path: Path) -> None:
    source = tmp_path / "source"
    source.mkdir()
    deep(source, 1200)
    (source / "link").symlink_to("d/d")
    (source / "out").symlink_to("..")
    fd = os.open(source, os.O_RDONLY | os.O_DIRECTORY)
    try:
        copy_tree(fd, tmp_path / "copy")
        assert tmp_path.joinpath("copy", *["d"] * 1200, "leaf.txt").read_bytes() == b"bottom\n"
        assert os.readlink(tmp_path / "copy" / "link") == "d/d" and not (tmp_path / "copy" / "out").exists()
    finally:
        os.close(fd)
        subprocess.run(["rm", "-rf", str(source), str(tmp_path / "copy")], check=True)  # rmtree recurses


class DictSandbox(Sandbox):
    """Just enough of a sandbox for the core's default ``_download``: paths to bytes (a
    file, mode 0o4755) or None (a directory, mode 0o1777)."""

    def __init__(self, entries: dict[str, bytes | None]) -> None:
        super().__init__(cast(Any, SimpleNamespace(name="dict")), "dict", SandboxSpec())
        self.entries = entries

    def _info_of(self, path: str) -> FileInfo:
        if path not in self.entries:
            raise FileNotFoundError(path)
        data, name, mtime = self.entries[path], posixpath.basename(path), datetime.fromtimestamp(0, UTC)
        if data is None:
            return FileInfo(path=path, name=name, type="dir", size=0, mode=0o1777, mtime=mtime)
        return FileInfo(path=path, name=name, type="file", size=len(data), mode=0o4755, mtime=mtime)

    async def _stat(self, path: str) -> FileInfo:
        return self._info_of(path)

    async def _list_dir(self, path: str) -> list[FileInfo]:
        return [self._info_of(p) for p in self.entries if posixpath.dirname(p) == path and p != path]

    async def _read_file(self, path: str) -> bytes:
        data = self.entries[path]
        assert data is not None
        return data

    async def _start(self, argv: list[str], *, cwd: str, env: dict[str, str], user: str | None) -> Process:
        raise NotImplementedError

    async def _write_file(self, path: str, data: bytes, *, mode: int | None, parents: bool) -> None:
        raise NotImplementedError

    async def _mkdir(self, path: str, *, parents: bool, exist_ok: bool) -> None:
        raise NotImplementedError

    async def _remove(self, path: str, *, recursive: bool) -> None:
        raise NotImplementedError

    async def _info(self) -> SandboxInfo:
        raise NotImplementedError

    async def _terminate(self) -> None:
        raise NotImplementedError


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_core_default_download_is_iterative_and_safe(tmp_path: Path, anyio_backend: str) -> None:
    entries: dict[str, bytes | None] = {"/t": None}
    path = "/t"
    for _ in range(1200):
        path += "/d"
        entries[path] = None
    entries[path + "/leaf"] = b"bottom"
    entries["/t/suid"] = b"#!/bin/sh\n"
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "suid").symlink_to(tmp_path / "victim")
    try:
        await DictSandbox(entries)._download("/t", dest)
        assert dest.joinpath(*["d"] * 1200, "leaf").read_bytes() == b"bottom"
        assert not (tmp_path / "victim").exists(), "the download wrote through a symlink"
        assert stat.S_IMODE((dest / "suid").lstat().st_mode) == 0o755
        assert stat.S_IMODE(dest.stat().st_mode) == 0o777
    finally:
        await anyio.run_process(["rm", "-rf", str(dest)])
