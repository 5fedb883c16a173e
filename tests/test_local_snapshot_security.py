"""Attacks on the local provider's snapshots, restores and tree removal (issue 12, items 1, 2, 9).

The program inside a sandbox is hostile: it controls every file under its workdir and /tmp,
and may change them while sandport works on them from the host. Each test performs one
attack and asserts that nothing of the host leaks in or gets touched.
"""

from __future__ import annotations

import io
import json
import os
import secrets
import stat
import tarfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest

import sandport.local.provider as local_provider
from sandport.errors import SandboxGone, SandboxNotFound
from sandport.local import LocalProvider, LocalSandbox
from sandport.local.isolation import bwrap_problem
from sandport.models import SandboxSpec, SnapshotRef

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.skipif(bool(bwrap_problem()), reason=f"local isolation unavailable: {bwrap_problem()}"),
]

DEPTH = 1200  # past Python's default recursion limit of 1000


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def provider(tmp_path: Path) -> LocalProvider:
    return LocalProvider(root=tmp_path / "root")


async def _create(provider: LocalProvider) -> LocalSandbox:
    sandbox = await provider.create()
    assert isinstance(sandbox, LocalSandbox)
    return sandbox


def _sandbox_dirs(provider: LocalProvider) -> list[str]:
    """Everything under sandboxes/, hidden entries included."""
    directory = provider.root / "sandboxes"
    return sorted(os.listdir(directory)) if directory.is_dir() else []


def _member(
    name: str, kind: bytes = tarfile.REGTYPE, *, data: bytes = b"", mode: int = 0o644, **attrs: Any
) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    for key, value in attrs.items():
        setattr(info, key, value)
    return info, data


def _tar(members: list[tuple[tarfile.TarInfo, bytes]]) -> bytes:
    """An archive laid out like a local snapshot (``fs/work``, ``fs/tmp``) plus ``members``."""
    base = [
        _member("fs", tarfile.DIRTYPE, mode=0o755),
        _member("fs/work", tarfile.DIRTYPE, mode=0o755),
        _member("fs/tmp", tarfile.DIRTYPE, mode=0o1777),
    ]
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in [*base, *members]:
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return buffer.getvalue()


def _spec_json() -> str:
    return json.dumps({"spec": SandboxSpec().model_dump(mode="json", exclude={"secrets"})})


def _forge(provider: LocalProvider, members: list[tuple[tarfile.TarInfo, bytes]]) -> SnapshotRef:
    """Put a hand-made archive into the snapshot store under a well-formed id (as a tampered
    or old snapshot would be) and return its ref."""
    snapshot_id = "snap-" + secrets.token_hex(6)
    store = provider.root / "snapshots"
    store.mkdir(parents=True, exist_ok=True)
    (store / f"{snapshot_id}.tar").write_bytes(_tar(members))
    (store / f"{snapshot_id}.json").write_text(_spec_json())
    return SnapshotRef(provider="local", id=snapshot_id)


def _walk_host(top: Path) -> list[tuple[Path, os.stat_result]]:
    """Every entry under ``top`` on the host, lstat'ed, without following symlinks."""
    found = []
    for parent, dirs, files in os.walk(top):
        for name in [*dirs, *files]:
            path = Path(parent, name)
            found.append((path, path.lstat()))
    return found


# -- item 1: snapshot ids are the provider's own, nothing else -----------------------------


async def test_restore_refuses_an_id_that_points_at_an_archive_the_sandbox_wrote(provider: LocalProvider) -> None:
    sandbox = await _create(provider)
    try:
        await sandbox.snapshot()  # the store exists, as it would on any real host
        planted = _tar([_member("fs/work/planted.txt", data=b"from the sandbox")])
        await sandbox.write_file("evil.tar", planted)
        await sandbox.write_file("evil.json", _spec_json())
        ref = SnapshotRef(provider="local", id=f"../sandboxes/{sandbox.id}/fs/work/evil")
        with pytest.raises(SandboxNotFound, match=r"snap-.*12 hex"):
            await provider.restore(ref)
        assert [info.id for info in await provider.list()] == [sandbox.id]  # nothing was restored
    finally:
        await sandbox.terminate()


@pytest.mark.parametrize(
    "bad_id",
    ["../../victim", "snap-0123456789ab/../../../victim", "/etc/passwd", "", "snap-ABCDEF012345", "snap-0123456789"],
)
async def test_delete_snapshot_refuses_ids_that_are_not_snapshot_ids(
    provider: LocalProvider, tmp_path: Path, bad_id: str
) -> None:
    victim = tmp_path / "victim.tar"  # <root>/snapshots/../../victim.tar
    victim.write_text("a host file")
    (tmp_path / "victim.json").write_text("{}")
    sandbox = await _create(provider)
    try:
        await sandbox.snapshot()  # the store exists, as it would on any real host
    finally:
        await sandbox.terminate()
    ref = SnapshotRef(provider="local", id=bad_id)
    with pytest.raises(SandboxNotFound, match="not a local snapshot id"):
        await provider.delete_snapshot(ref)
    with pytest.raises(ValueError, match="not a local snapshot id"):
        await provider.restore(ref)
    assert victim.read_text() == "a host file" and (tmp_path / "victim.json").exists()


# -- item 1: extraction refuses what could reach the host ----------------------------------


@pytest.mark.parametrize("linkname", ["ABSOLUTE", "fs/work/../../../../../host-secret"])
async def test_restore_refuses_a_hardlink_to_a_host_file(
    provider: LocalProvider, tmp_path: Path, linkname: str
) -> None:
    secret = tmp_path / "host-secret"
    secret.write_text("TOPSECRET")
    secret.chmod(0o600)
    target = str(secret) if linkname == "ABSOLUTE" else linkname
    ref = _forge(provider, [_member("fs/work/stolen", tarfile.LNKTYPE, linkname=target)])
    with pytest.raises(ValueError, match=r"hard ?link"):
        await provider.restore(ref)
    assert secret.stat().st_nlink == 1, "the restore linked a host file into the sandbox"
    assert secret.read_text() == "TOPSECRET"
    assert _sandbox_dirs(provider) == []  # the failed restore left nothing behind


async def test_restore_never_writes_through_a_symlink(provider: LocalProvider, tmp_path: Path) -> None:
    outside = tmp_path / "host-dir"
    outside.mkdir()
    ref = _forge(provider, [
        _member("fs/work/esc", tarfile.SYMTYPE, linkname=str(outside), mode=0o777),
        _member("fs/work/esc/pwned", data=b"written through a symlink"),
    ])  # fmt: skip
    with pytest.raises(ValueError, match="not a directory"):
        await provider.restore(ref)
    assert os.listdir(outside) == []
    assert _sandbox_dirs(provider) == []


async def test_restore_keeps_no_device_nodes_fifos_or_setuid_bits(provider: LocalProvider) -> None:
    ref = _forge(provider, [
        _member("fs/work/disk", tarfile.BLKTYPE, devmajor=7, devminor=0),
        _member("fs/work/mem", tarfile.CHRTYPE, devmajor=1, devminor=1),
        _member("fs/tmp/pipe", tarfile.FIFOTYPE),
        _member("fs/work/suid", data=b"#!/bin/sh\necho ran\n", mode=0o6755),
        _member("fs/work/sgid-dir", tarfile.DIRTYPE, mode=0o2775),
        # Legitimate content: an absolute symlink means the sandbox's own /usr/bin/python3.
        _member("fs/work/py", tarfile.SYMTYPE, linkname="/usr/bin/python3", mode=0o777),
        _member("fs/work/data.txt", data=b"kept"),
        _member("fs/work/same.txt", tarfile.LNKTYPE, linkname="fs/work/data.txt"),
    ])  # fmt: skip
    restored = await provider.restore(ref)
    assert isinstance(restored, LocalSandbox)
    try:
        entries = _walk_host(restored.directory)
        special = [str(p) for p, st in entries if not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)
                                                       or stat.S_ISLNK(st.st_mode))]  # fmt: skip
        assert special == [], "device nodes or FIFOs were restored"
        assert [str(p) for p, st in entries if st.st_mode & (stat.S_ISUID | stat.S_ISGID)] == []
        names = {p.name for p in restored.directory.iterdir()}
        assert not any(n.startswith("fs.") for n in names), names  # no staging directory left
        assert (await restored.exec(["./suid"])).stdout == b"ran\n"
        assert (await restored.exec(["./py", "-c", "print(6 * 7)"])).stdout == b"42\n"
        assert await restored.read_file("same.txt") == b"kept"
        work = restored.directory / "fs" / "work"
        assert (work / "same.txt").stat().st_ino == (work / "data.txt").stat().st_ino
    finally:
        await restored.terminate()


# -- item 2: a snapshot never follows what the sandbox swaps in ----------------------------

SWAPPER = r"""
import ctypes, os, sys
canary, size, names = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
os.mkdir("d")
for name in names:  # as long as the host's files, so that reading one for the other fails nothing
    with open(os.path.join("d", name), "w") as f:
        f.write("s" * size)
os.symlink(canary, "other")
libc = ctypes.CDLL(None, use_errno=True)
AT_FDCWD, RENAME_EXCHANGE = -100, 2
def exchange():  # d is always there: a directory one moment, a symlink to the host the next
    if libc.renameat2(AT_FDCWD, b"d", AT_FDCWD, b"other", RENAME_EXCHANGE) != 0:
        os.rename("d", "tmp-swap"); os.rename("other", "d"); os.rename("tmp-swap", "other")
open("started", "w").close()
while True:
    exchange()
"""


async def test_snapshot_race_never_archives_host_files(provider: LocalProvider, tmp_path: Path) -> None:
    token = "HOST-CANARY-" + secrets.token_hex(16)
    canary = tmp_path / "canary"
    canary.mkdir()
    names = [f"f{i}" for i in range(20)]
    for name in names:
        (canary / name).write_text(token + "\n")
    sandbox = await _create(provider)
    try:
        await sandbox.write_file("swap.py", SWAPPER)
        size = len(token) + 1
        swapper = await sandbox.start(["python3", "swap.py", str(canary), str(size), *names])
        with anyio.fail_after(10):
            while not await sandbox.exists("started"):
                await anyio.sleep(0.02)
        refs = []
        deadline = time.monotonic() + 12
        while len(refs) < 60 and time.monotonic() < deadline:
            refs.append(await sandbox.snapshot())  # churn must never fail a snapshot
        await swapper.kill()
        assert len(refs) >= 20
        seen = set()
        for ref in refs:
            archive = Path(ref.metadata["path"])
            assert token.encode() not in archive.read_bytes(), "a host file was archived"
            with tarfile.open(archive) as tar:
                seen |= {"dir" if m.isdir() else "symlink" if m.issym() else m.type.decode()
                         for m in tar if m.name == "fs/work/d"}  # fmt: skip
        assert seen == {"dir", "symlink"}, f"the race did not happen (saw {seen})"
    finally:
        await sandbox.terminate()


# -- item 9: deep trees, and a teardown others see at once ---------------------------------

MAKE_DEEP = f"""
import os
for _ in range({DEPTH}):
    os.mkdir("d"); os.chdir("d")
open("leaf", "w").write("deep")
"""
READ_DEEP = f"""
import os
for _ in range({DEPTH}):
    os.chdir("d")
print(open("leaf").read())
"""


async def test_deep_tree_snapshot_and_restore(provider: LocalProvider) -> None:
    sandbox = await _create(provider)
    try:
        await sandbox.exec(["python3", "-c", MAKE_DEEP], check=True)
        ref = await sandbox.snapshot()
        restored = await provider.restore(ref)
        try:
            assert (await restored.exec(["python3", "-c", READ_DEEP], check=True)).stdout == b"deep\n"
        finally:
            await restored.terminate()
        await provider.delete_snapshot(ref)
    finally:
        await sandbox.terminate()


async def test_deep_tree_remove(provider: LocalProvider) -> None:
    sandbox = await _create(provider)
    try:
        await sandbox.exec(["python3", "-c", MAKE_DEEP], check=True)
        await sandbox.remove("d", recursive=True)
        assert not await sandbox.exists("d")
    finally:
        await sandbox.terminate()


async def test_deep_tree_terminate_leaves_nothing(provider: LocalProvider) -> None:
    sandbox = await _create(provider)
    await sandbox.exec(["python3", "-c", MAKE_DEEP], check=True)
    await sandbox.terminate()
    assert _sandbox_dirs(provider) == []
    assert await provider.gc() == []


async def test_interrupted_teardown_is_gone_at_once_and_gc_cleans_it(
    provider: LocalProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    sandbox = await _create(provider)
    await sandbox.write_file("a/b/c.txt", "x")
    real: Callable[..., None] = local_provider.remove_tree

    def crash(*args: Any, **kwargs: Any) -> None:
        raise OSError(5, "simulated crash in the middle of a teardown")

    monkeypatch.setattr(local_provider, "remove_tree", crash)
    await sandbox.terminate()
    monkeypatch.setattr(local_provider, "remove_tree", real)
    other = LocalProvider(root=provider.root)  # another process's view
    with pytest.raises(SandboxNotFound):
        await other.connect(sandbox.id)
    assert await other.list() == []
    leftover = _sandbox_dirs(provider)
    assert len(leftover) == 1 and sandbox.id in leftover[0]
    assert (provider.root / "sandboxes" / leftover[0] / "meta.json").exists(), "metadata must go last"
    assert await other.gc(dry_run=True) == [sandbox.id]
    assert _sandbox_dirs(provider) == leftover
    assert await other.gc() == [sandbox.id]
    assert _sandbox_dirs(provider) == []


async def test_a_sandbox_held_elsewhere_sees_a_teardown_at_once(provider: LocalProvider) -> None:
    sandbox = await _create(provider)
    held = await LocalProvider(root=provider.root).connect(sandbox.id)
    await sandbox.terminate()
    with pytest.raises(SandboxGone):
        await held.exec("true")


# -- the walking machinery, host-side ------------------------------------------------------


def _chain(top: Path, depth: int) -> Path:
    """``top/d/d/.../d`` (``depth`` levels) with a file ``leaf`` at the bottom, made
    through directory fds (the path is too long for the kernel to take whole)."""
    fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
    for _ in range(depth):
        os.mkdir("d", dir_fd=fd)
        child = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        os.close(fd)
        fd = child
    leaf = os.open("leaf", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd)
    os.write(leaf, b"deep")
    os.close(leaf)
    os.close(fd)
    return top


def test_deep_trees_need_few_file_descriptors(tmp_path: Path) -> None:
    import resource

    from sandport.local.snapshots import pack, unpack
    from sandport.local.tree import remove_tree

    source = tmp_path / "fs"
    (source / "tmp").mkdir(parents=True)
    (source / "work").mkdir()
    _chain(source / "work", DEPTH)
    (tmp_path / "out").mkdir()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    in_use = len(os.listdir("/proc/self/fd"))
    resource.setrlimit(resource.RLIMIT_NOFILE, (in_use + 100, hard))  # far fewer than DEPTH
    try:
        pack(source, tmp_path / "deep.tar")
        unpack(tmp_path / "deep.tar", tmp_path / "out")
        remove_tree(tmp_path / "out" / "work")
        remove_tree(source)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert os.listdir(tmp_path / "out") == ["tmp"]
    assert not source.exists()


def test_dir_stack_goes_up_only_into_the_directories_it_came_down(tmp_path: Path) -> None:
    from sandport.local.tree import KEEP_OPEN, DirStack, open_dir

    def level(k: int) -> Path:
        return tmp_path.joinpath(*["d"] * k)

    depth = KEEP_OPEN + 10  # levels 1..10 are closed once at the bottom
    _chain(tmp_path, depth)
    with DirStack(open_dir(tmp_path), None) as stack:
        for _ in range(depth):
            stack.push("d", None)
        level4 = level(4).stat()
        # Level 11 leaves level 10 (so ".." from it leads elsewhere), and level 5 is renamed
        # (so level 10 cannot be found by name either): the stack must be cut at level 4.
        level(11).rename(tmp_path / "moved")
        level(5).rename(level(4) / "renamed")
        while stack.depth > 11:
            assert stack.pop()
        assert not stack.pop()
        assert stack.depth == 4
        assert os.path.samestat(os.fstat(stack.fd), level4)
    (level(4) / "renamed").rename(level(5))
    (tmp_path / "moved").rename(level(11))
    # Moved away and back: the very same directories, so nothing is cut.
    with DirStack(open_dir(tmp_path), None) as stack:
        for _ in range(depth):
            stack.push("d", None)
        (tmp_path / "d").rename(tmp_path / "away")
        (tmp_path / "away").rename(tmp_path / "d")
        while stack.depth:
            assert stack.pop()


async def test_restore_reads_archives_of_the_previous_format(provider: LocalProvider, tmp_path: Path) -> None:
    """Snapshots written before this change (``tarfile.add`` of the whole ``fs`` tree) restore."""
    source = tmp_path / "old" / "fs"
    (source / "work" / "sub").mkdir(parents=True)
    (source / "tmp").mkdir()
    (source / "tmp").chmod(0o1777)
    (source / "work" / "sub" / "a.txt").write_text("A")
    os.link(source / "work" / "sub" / "a.txt", source / "work" / "b.txt")
    (source / "work" / "abs").symlink_to("/etc/passwd")
    os.mkfifo(source / "work" / "pipe")
    snapshot_id = "snap-" + secrets.token_hex(6)
    store = provider.root / "snapshots"
    store.mkdir(parents=True)
    with tarfile.open(store / f"{snapshot_id}.tar", "w") as tar:
        tar.add(source, arcname="fs")
    (store / f"{snapshot_id}.json").write_text(_spec_json())
    restored = await provider.restore(SnapshotRef(provider="local", id=snapshot_id))
    try:
        assert await restored.read_file("sub/a.txt") == b"A"
        assert await restored.read_file("b.txt") == b"A"
        assert (await restored.exec(["readlink", "abs"])).stdout == b"/etc/passwd\n"
        assert not await restored.exists("pipe")
        assert (await restored.exec(["stat", "-c", "%a", "/tmp"])).stdout == b"1777\n"
    finally:
        await restored.terminate()
