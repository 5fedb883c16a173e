"""Path escapes: ``..``, host paths and symlinks must all resolve inside the sandbox.

Each check plants canary files on the test host (under pytest's ``tmp_path``) and asserts
that no operation reads, changes or removes them.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from sandport.sandbox import Sandbox
from sandport.testing._support import Canary
from sandport.testing.base import ConformanceBase

__all__ = ["EscapeChecks"]

_REFUSED = (FileNotFoundError, PermissionError, NotADirectoryError, IsADirectoryError)


async def read_or_none(sandbox: Sandbox, path: str) -> bytes | None:
    try:
        return await sandbox.read_file(path)
    except _REFUSED:
        return None


async def assert_own_file(sandbox: Sandbox, path: str) -> None:
    """The API shows at ``path`` exactly what the sandbox's own processes see there."""
    inside = await sandbox.exec(["cat", path])
    if inside.exit_code == 0:
        assert await sandbox.read_file(path) == inside.stdout
    else:
        with pytest.raises(_REFUSED):
            await sandbox.read_file(path)


class EscapeChecks(ConformanceBase):
    async def test_host_paths_are_not_visible(self, sandbox: Sandbox, tmp_path: Path) -> None:
        canary = Canary(tmp_path / "host")
        host = str(canary.file)
        ups = "../" * 30
        for path in (host, ups + host.lstrip("/"), "/" + ups + host.lstrip("/"), f"/tmp/{ups}{host.lstrip('/')}"):
            data = await read_or_none(sandbox, path)
            assert data is None or canary.token.encode() not in data, f"read_file({path!r}) read the host's file"
        for cmd in (["cat", host], ["ls", "-la", str(canary.dir)], ["sh", "-c", f"cat {ups}{host.lstrip('/')}"]):
            result = await sandbox.exec(cmd)
            assert canary.token.encode() not in result.stdout and b"canary.txt" not in result.stdout

    async def test_dotdot_cannot_escape(self, sandbox: Sandbox, tmp_path: Path) -> None:
        name = f"sandport-escape-{os.getpid()}-{id(sandbox)}.txt"
        try:
            await sandbox.write_file("../" * 30 + name, "escaped")
        except _REFUSED:
            pass
        for ancestor in [tmp_path, *tmp_path.parents]:
            assert not (ancestor / name).exists(), f"write_file('../..') wrote {ancestor / name} on the host"
        for path in ("..", "../..", "/" + "../" * 10):
            listing = await sandbox.list_dir(path)
            assert all(e.path.startswith("/") for e in listing)
            assert "canary.txt" not in {e.name for e in listing}

    @pytest.mark.parametrize("target", ["/etc/shadow", "/root/.bashrc", "/etc/hostname", "/etc/passwd"])
    async def test_symlink_to_system_file_resolves_inside(self, sandbox: Sandbox, target: str) -> None:
        await sandbox.exec(["ln", "-s", target, "link"], check=True)
        await assert_own_file(sandbox, "link")
        await assert_own_file(sandbox, "/" + "../" * 10 + target.lstrip("/"))

    async def test_symlink_to_host_dir_resolves_inside(self, sandbox: Sandbox, tmp_path: Path) -> None:
        canary = Canary(tmp_path / "hostdir")
        await sandbox.exec(["ln", "-s", str(canary.dir), "dirlink"], check=True)
        await sandbox.exec(["ln", "-s", str(canary.file), "filelink"], check=True)
        await sandbox.exec(["ln", "-s", "../" * 30 + str(canary.dir).lstrip("/"), "uplink"], check=True)
        for path in ("dirlink/canary.txt", "filelink", "uplink/canary.txt"):
            data = await read_or_none(sandbox, path)
            assert data is None or canary.token.encode() not in data, f"{path} read the host's canary"
        for path in ("dirlink", "uplink"):
            try:
                names = {e.name for e in await sandbox.list_dir(path)}
            except _REFUSED:
                names = set()
            assert "canary.txt" not in names, f"list_dir({path!r}) listed the host's directory"
        await sandbox.exec(["ln", "-s", "/root", "rootlink"], check=True)
        inside = await sandbox.exec(["ls", "-A", "rootlink/"])
        if inside.exit_code == 0:
            assert sorted(e.name for e in await sandbox.list_dir("rootlink")) == sorted(inside.text.split("\n")[:-1])
        else:
            with pytest.raises(_REFUSED):
                await sandbox.list_dir("rootlink")

    async def test_writes_through_symlinks_stay_inside(self, sandbox: Sandbox, tmp_path: Path) -> None:
        canary = Canary(tmp_path / "hostdir")
        await sandbox.exec(["ln", "-s", str(canary.dir), "dirlink"], check=True)
        await sandbox.exec(["ln", "-s", str(canary.file), "filelink"], check=True)
        attempts: list[Callable[[], Awaitable[None]]] = [
            lambda: sandbox.write_file("filelink", "pwned"),
            lambda: sandbox.write_file("dirlink/canary.txt", "pwned"),
            lambda: sandbox.write_file("dirlink/new.txt", "pwned"),
            lambda: sandbox.write_file(str(canary.file), "pwned"),
            lambda: sandbox.mkdir("dirlink/newdir"),
            lambda: sandbox.remove("dirlink/canary.txt"),
            lambda: sandbox.remove("dirlink", recursive=True),
        ]
        for attempt in attempts:
            try:
                await attempt()
            except (*_REFUSED, FileExistsError):
                pass
            assert canary.intact(), "an operation through a symlink changed the host"
        await sandbox.exec(["sh", "-c", f"echo pwned > {canary.file}; rm -f {canary.file}"])
        assert canary.intact(), "a command changed the host"

    async def test_download_does_not_follow_links_out(self, sandbox: Sandbox, tmp_path: Path) -> None:
        canary = Canary(tmp_path / "hostdir")
        await sandbox.write_file("tree/real.txt", "real")
        await sandbox.exec(["ln", "-s", str(canary.file), "tree/host-link"], check=True)
        await sandbox.exec(["ln", "-s", "/etc/passwd", "tree/passwd-link"], check=True)
        await sandbox.exec(["ln", "-s", "../" * 30 + str(canary.dir).lstrip("/"), "tree/up-link"], check=True)
        dest = tmp_path / "downloaded"
        await sandbox.download("tree", dest)
        assert (dest / "real.txt").read_text() == "real"
        for path in dest.rglob("*"):
            if path.is_symlink():
                resolved = path.resolve()
                assert resolved == dest.resolve() or dest.resolve() in resolved.parents, f"{path} links out"
            elif path.is_file():
                assert canary.token.encode() not in path.read_bytes()

    async def test_uploaded_symlink_resolves_inside(self, sandbox: Sandbox, tmp_path: Path) -> None:
        canary = Canary(tmp_path / "hostdir")
        src = tmp_path / "src"
        src.mkdir()
        (src / "host-link").symlink_to(canary.file)
        (src / "plain.txt").write_text("plain")
        await sandbox.upload(src, "up")
        assert await sandbox.read_file("up/plain.txt") == b"plain"
        data = await read_or_none(sandbox, "up/host-link")
        assert data is None or canary.token.encode() not in data
        assert canary.token.encode() not in (await sandbox.exec(["cat", "up/host-link"])).stdout
