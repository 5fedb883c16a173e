"""File operations: exact bytes, modes, errors as Python's own OSErrors, listing, removal."""

from __future__ import annotations

import os
from functools import partial

import anyio
import pytest

from sandport.errors import FileTooLarge
from sandport.sandbox import Sandbox
from sandport.testing._support import Sandboxes
from sandport.testing.base import ConformanceBase

__all__ = ["FileChecks"]


class FileChecks(ConformanceBase):
    @pytest.mark.parametrize(
        "data", [b"", bytes(range(256)), os.urandom(5 * 1024 * 1024)], ids=["empty", "all-bytes", "5MiB-random"]
    )
    async def test_file_round_trip(self, sandbox: Sandbox, data: bytes) -> None:
        await sandbox.write_file("blob.bin", data)
        assert await sandbox.read_file("blob.bin") == data
        assert (await sandbox.stat("blob.bin")).size == len(data)
        seen = await sandbox.exec(["wc", "-c", "blob.bin"])
        assert seen.text.split()[0] == str(len(data))

    async def test_write_str_is_utf8(self, sandbox: Sandbox) -> None:
        await sandbox.write_file("text.txt", "grüße ✓\n")
        assert await sandbox.read_file("text.txt") == "grüße ✓\n".encode()

    @pytest.mark.parametrize("mode", [0o755, 0o600])
    async def test_write_mode(self, sandbox: Sandbox, mode: int) -> None:
        await sandbox.write_file("moded", b"#!/bin/sh\necho hi\n", mode=mode)
        assert (await sandbox.stat("moded")).mode & 0o777 == mode
        assert (await sandbox.exec(["stat", "-c", "%a", "moded"])).text.strip() == f"{mode:o}"

    async def test_default_mode_and_replace_keeps_mode(self, sandbox: Sandbox) -> None:
        await sandbox.write_file("new.txt", "x")
        assert (await sandbox.stat("new.txt")).mode & 0o777 == 0o644
        await sandbox.write_file("tool", "#!/bin/sh\necho v1\n", mode=0o755)
        await sandbox.write_file("tool", "#!/bin/sh\necho v2\n")
        assert (await sandbox.stat("tool")).mode & 0o777 == 0o755
        assert (await sandbox.exec(["./tool"])).stdout == b"v2\n"

    async def test_write_parents(self, sandbox: Sandbox) -> None:
        await sandbox.write_file("a/b/c/deep.txt", "deep")
        assert (await sandbox.stat("a/b")).is_dir
        assert (await sandbox.exec(["cat", "a/b/c/deep.txt"])).stdout == b"deep"
        with pytest.raises(FileNotFoundError):
            await sandbox.write_file("missing/parent/file.txt", "x", parents=False)
        assert not await sandbox.exists("missing")

    async def test_write_under_a_file_is_not_a_directory(self, sandbox: Sandbox) -> None:
        await sandbox.write_file("plain", "x")
        for parents in (True, False):
            with pytest.raises(NotADirectoryError):
                await sandbox.write_file("plain/child.txt", "y", parents=parents)
        assert await sandbox.read_file("plain") == b"x"

    async def test_directory_errors(self, sandbox: Sandbox) -> None:
        await sandbox.mkdir("adir")
        await sandbox.write_file("adir/inside", "keep")
        with pytest.raises(IsADirectoryError):
            await sandbox.write_file("adir", "x")
        with pytest.raises(IsADirectoryError):
            await sandbox.read_file("adir")
        assert await sandbox.read_file("adir/inside") == b"keep"

    async def test_missing_paths_are_file_not_found(self, sandbox: Sandbox) -> None:
        for op in (sandbox.read_file, sandbox.stat, sandbox.list_dir, sandbox.remove):
            with pytest.raises(FileNotFoundError):
                await op("no-such-entry")
        assert not await sandbox.exists("no-such-entry")

    async def test_list_dir_on_file_is_not_a_directory(self, sandbox: Sandbox) -> None:
        await sandbox.write_file("file.txt", "x")
        with pytest.raises(NotADirectoryError):
            await sandbox.list_dir("file.txt")

    async def test_list_dir_sorted_with_types(self, sandbox: Sandbox) -> None:
        await sandbox.exec(
            "mkdir -p ls/zdir && echo 12345 > ls/b.txt && ln -s b.txt ls/alink && touch ls/Upper", check=True
        )
        entries = await sandbox.list_dir("ls")
        assert [(e.name, e.type) for e in entries] == [
            ("Upper", "file"), ("alink", "symlink"), ("b.txt", "file"), ("zdir", "dir")]  # fmt: skip
        by_name = {e.name: e for e in entries}
        assert by_name["b.txt"].size == 6
        assert by_name["b.txt"].path == f"{sandbox.spec.workdir.rstrip('/')}/ls/b.txt"
        assert await sandbox.list_dir("ls/zdir") == []

    async def test_stat(self, sandbox: Sandbox) -> None:
        await sandbox.write_file("s/f.txt", b"12345678")
        await sandbox.exec(["ln", "-s", "f.txt", "s/link"], check=True)
        info = await sandbox.stat("s/f.txt")
        assert (info.type, info.size, info.name, info.is_file) == ("file", 8, "f.txt", True)
        assert info.mtime.tzinfo is not None
        assert (await sandbox.stat("s")).is_dir
        assert (await sandbox.stat("s/link")).type == "file", "stat follows symlinks"
        await sandbox.exec(["ln", "-s", "missing", "s/dangling"], check=True)
        with pytest.raises(FileNotFoundError):
            await sandbox.stat("s/dangling")
        assert not await sandbox.exists("s/dangling")

    async def test_mkdir_semantics(self, sandbox: Sandbox) -> None:
        await sandbox.mkdir("m/n/o")
        assert (await sandbox.stat("m/n/o")).is_dir
        await sandbox.mkdir("m/n/o")  # exist_ok defaults to True
        with pytest.raises(FileExistsError):
            await sandbox.mkdir("m/n/o", exist_ok=False)
        await sandbox.write_file("m/file", "x")
        with pytest.raises(FileExistsError):
            await sandbox.mkdir("m/file")
        with pytest.raises(FileNotFoundError):
            await sandbox.mkdir("p/q/r", parents=False)
        assert not await sandbox.exists("p")

    async def test_remove(self, sandbox: Sandbox) -> None:
        await sandbox.write_file("r/file", "x")
        await sandbox.mkdir("r/empty")
        await sandbox.remove("r/file")
        await sandbox.remove("r/empty")
        assert await sandbox.list_dir("r") == []
        await sandbox.write_file("t/sub/leaf", "x")
        with pytest.raises(IsADirectoryError):
            await sandbox.remove("t")
        assert await sandbox.read_file("t/sub/leaf") == b"x"
        await sandbox.remove("t", recursive=True)
        assert not await sandbox.exists("t")
        assert (await sandbox.exec(["test", "-e", "t"])).exit_code == 1

    async def test_remove_symlink_keeps_target(self, sandbox: Sandbox) -> None:
        await sandbox.write_file("target.txt", "stay")
        await sandbox.mkdir("targetdir")
        await sandbox.write_file("targetdir/inner", "stay too")
        await sandbox.exec("ln -s target.txt flink && ln -s targetdir dlink", check=True)
        await sandbox.remove("flink")
        await sandbox.remove("dlink", recursive=True)
        assert await sandbox.read_file("target.txt") == b"stay"
        assert await sandbox.read_file("targetdir/inner") == b"stay too"
        assert {e.name for e in await sandbox.list_dir(".")} >= {"target.txt", "targetdir"}
        assert not {"flink", "dlink"} & {e.name for e in await sandbox.list_dir(".")}

    async def test_api_and_exec_see_the_same_files(self, sandbox: Sandbox) -> None:
        await sandbox.write_file("from-api.txt", "api")
        assert (await sandbox.exec(["cat", "from-api.txt"])).stdout == b"api"
        await sandbox.exec("printf exec > from-exec.txt; mkdir -p made/here", check=True)
        assert await sandbox.read_file("from-exec.txt") == b"exec"
        assert (await sandbox.stat("made/here")).is_dir
        await sandbox.write_file("/tmp/in-tmp.txt", "tmp")
        assert (await sandbox.exec(["cat", "/tmp/in-tmp.txt"])).stdout == b"tmp"

    async def test_relative_paths_resolve_under_workdir(self, sandbox: Sandbox) -> None:
        workdir = sandbox.spec.workdir.rstrip("/")
        await sandbox.write_file("rel/x.txt", "rel")
        assert await sandbox.read_file(f"{workdir}/rel/x.txt") == b"rel"
        assert (await sandbox.stat("rel/x.txt")).path == f"{workdir}/rel/x.txt"
        assert (await sandbox.exec(["cat", f"{workdir}/rel/x.txt"], cwd="/")).stdout == b"rel"
        assert await sandbox.read_file("rel/../rel/./x.txt") == b"rel"

    async def test_read_over_cap_is_file_too_large(self, sandboxes: Sandboxes) -> None:
        sandbox = await sandboxes.create(max_file_bytes=1000)
        await sandbox.write_file("big", b"x" * 1001)
        await sandbox.write_file("ok", b"x" * 1000)
        with pytest.raises(FileTooLarge):
            await sandbox.read_file("big")
        assert await sandbox.read_file("ok") == b"x" * 1000

    async def test_unicode_and_space_names(self, sandbox: Sandbox) -> None:
        name = "dïr with space/fïlé ✓ 'q'.txt"
        await sandbox.write_file(name, "named")
        assert (await sandbox.exec(["cat", name])).stdout == b"named"
        assert [e.name for e in await sandbox.list_dir("dïr with space")] == ["fïlé ✓ 'q'.txt"]

    async def test_write_through_internal_symlink_updates_target(self, sandbox: Sandbox) -> None:
        await sandbox.write_file("real.txt", "old")
        await sandbox.exec(["ln", "-s", "real.txt", "alias"], check=True)
        await sandbox.write_file("alias", "new")
        assert (await sandbox.exec(["cat", "real.txt"])).stdout == b"new"
        assert {e.name: e.type for e in await sandbox.list_dir(".")}["alias"] == "symlink"

    async def test_root_listing(self, sandbox: Sandbox) -> None:
        names = {e.name for e in await sandbox.list_dir("/")}
        top = sandbox.spec.workdir.strip("/").split("/")[0]
        assert {"tmp", top} <= names
        assert (await sandbox.stat("/")).is_dir
        with pytest.raises(IsADirectoryError):
            await sandbox.read_file("/")

    async def test_read_fifo_does_not_block(self, sandbox: Sandbox) -> None:
        """A FIFO planted in the sandbox must not hang read_file until someone writes to it."""
        await sandbox.exec(["mkfifo", "fifo"], check=True)
        async with anyio.create_task_group() as tg:
            tg.start_soon(partial(sandbox.exec, ["sh", "-c", "sleep 3; echo late > fifo"], timeout=60))
            try:
                data = await sandbox.read_file("fifo")
            except OSError:
                data = b""
            await sandbox.exec(["sh", "-c", "cat fifo > /dev/null"], timeout=30)  # let the writer finish
        assert b"late" not in data, "read_file blocked on a FIFO until a writer came"
