"""upload/download of whole trees, and atomic writes."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import anyio
import pytest

from sandport.sandbox import Sandbox
from sandport.testing._support import py
from sandport.testing.base import ConformanceBase

__all__ = ["TransferChecks"]


def make_tree(root: Path) -> None:
    (root / "bin").mkdir(parents=True)
    (root / "nested/deeper/deepest").mkdir(parents=True)
    (root / "empty").mkdir()
    (root / "top.txt").write_text("top\n")
    (root / "bin/run.sh").write_text("#!/bin/sh\necho ran\n")
    (root / "bin/run.sh").chmod(0o755)
    (root / "nested/deeper/data.bin").write_bytes(os.urandom(200_000))
    (root / "nested/deeper/data.bin").chmod(0o600)
    (root / "nested/deeper/deepest/ünï code.txt").write_text("unicode name")
    (root / "private").mkdir(mode=0o700)
    (root / "private/shared.txt").write_text("group-writable")
    (root / "private/shared.txt").chmod(0o664)
    (root / "private").chmod(0o700)


def describe(root: Path) -> dict[str, tuple[str, int, bytes]]:
    """relative path -> (kind, permission bits, content) for every entry under ``root``."""
    found: dict[str, tuple[str, int, bytes]] = {}
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        kind = "dir" if stat.S_ISDIR(st.st_mode) else "file"
        found[str(path.relative_to(root))] = (
            kind,
            stat.S_IMODE(st.st_mode),
            path.read_bytes() if kind == "file" else b"",
        )
    return found


class TransferChecks(ConformanceBase):
    async def test_upload_download_tree_round_trip(self, sandbox: Sandbox, tmp_path: Path) -> None:
        make_tree(tmp_path / "src")
        await sandbox.upload(tmp_path / "src", "dst")
        assert (await sandbox.exec(["./dst/bin/run.sh"])).stdout == b"ran\n"
        assert (await sandbox.exec(["stat", "-c", "%a", "dst/nested/deeper/data.bin"])).text.strip() == "600"
        assert (await sandbox.stat("dst/empty")).is_dir
        modes = await sandbox.exec(["stat", "-c", "%a", "dst/private", "dst/private/shared.txt"])
        assert modes.text.split() == ["700", "664"]
        await sandbox.download("dst", tmp_path / "back")
        assert describe(tmp_path / "back") == describe(tmp_path / "src")

    async def test_upload_download_single_file(self, sandbox: Sandbox, tmp_path: Path) -> None:
        (tmp_path / "one.bin").write_bytes(bytes(range(256)) * 3)
        await sandbox.upload(tmp_path / "one.bin", "sub/one.bin")
        assert await sandbox.read_file("sub/one.bin") == bytes(range(256)) * 3
        await sandbox.download("sub/one.bin", tmp_path / "copy.bin")
        assert (tmp_path / "copy.bin").read_bytes() == bytes(range(256)) * 3

    async def test_transfer_missing_source(self, sandbox: Sandbox, tmp_path: Path) -> None:
        with pytest.raises(FileNotFoundError):
            await sandbox.upload(tmp_path / "absent", "dst")
        with pytest.raises(FileNotFoundError):
            await sandbox.download("absent", tmp_path / "dst")
        assert not (tmp_path / "dst").exists()

    async def test_write_is_atomic(self, sandbox: Sandbox) -> None:
        """A reader in the sandbox never sees a partial file while write_file replaces it."""
        small, large = b"a" * (2 * 1024 * 1024), b"b" * (3 * 1024 * 1024)
        await sandbox.write_file("atomic/target", small)
        reader = """
            import json, os, time
            open('ready', 'w').close()
            seen, bad, end = set(), 0, time.time() + 60
            while time.time() < end and not os.path.exists('stop'):
                try:
                    with open('target', 'rb') as f:
                        data = f.read()
                except FileNotFoundError:
                    seen.add(-1)
                    continue
                seen.add(len(data))
                bad += data.count(data[:1]) != len(data)
            print(json.dumps([sorted(seen), bad]))
            """
        output: list[bytes] = []

        async def read() -> None:
            output.append((await sandbox.exec(py(reader), cwd="atomic", timeout=90)).stdout)

        async with anyio.create_task_group() as tg:
            tg.start_soon(read)
            with anyio.fail_after(self.slack):
                while not await sandbox.exists("atomic/ready"):
                    await anyio.sleep(0.05)
            for i in range(16):
                await sandbox.write_file("atomic/target", large if i % 2 == 0 else small)
            await sandbox.write_file("atomic/stop", "")
        seen, mixed = json.loads(output[0])
        assert set(seen) <= {len(small), len(large)}, f"a reader saw a missing (-1) or partial file: sizes {seen}"
        assert mixed == 0, f"a reader saw {mixed} files mixing old and new content"
        assert sorted(e.name for e in await sandbox.list_dir("atomic")) == ["ready", "stop", "target"]
