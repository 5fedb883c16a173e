"""A local sandbox cannot reach the host's root-only files, nor outlive or exhaust the host
through its processes (issue 12, items 6, 12, 13 and 14).

Each check performs the attack: it plants a root-only (0600) canary in every directory the
sandbox mounts from the host, double-forks a process out of its process group, runs a fork
bomb, or terminates a sandbox under a running command from another provider instance.
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import sandport
from sandport.errors import SandboxGone
from sandport.local import LocalProvider
from sandport.local.cgroups import cgroup_problem
from sandport.local.isolation import sandbox_user, system_mounts

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="plants root-only canaries; needs root")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def canaries() -> Iterator[list[tuple[Path, str]]]:
    """A 0600 root-owned file with a fresh token in every host directory a sandbox mounts
    (and next to every mounted file), removed afterwards."""
    planted: list[tuple[Path, str]] = []
    directories = {Path(m.host) if Path(m.host).is_dir() else Path(m.host).parent for m in system_mounts() if m.host}
    try:
        for directory in sorted(directories):
            token = secrets.token_hex(8)
            path = directory / f".sandport-canary-{token}"
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            os.write(fd, token.encode())
            os.close(fd)
            planted.append((path, token))
        yield planted
    finally:
        for path, _ in planted:
            path.unlink(missing_ok=True)


def test_root_only_host_files_are_unreadable_from_inside(canaries: list[tuple[Path, str]], tmp_path: Path) -> None:
    with sandport.open(LocalProvider(root=tmp_path / "root")) as sb:
        for path, token in canaries:
            shown = str(path)
            inside = sb.exec(["cat", shown])
            assert token.encode() not in inside.stdout, f"exec read the host's root-only {shown}"
            if inside.exit_code == 0:
                pytest.fail(f"cat {shown} succeeded inside the sandbox")
            with pytest.raises((PermissionError, FileNotFoundError)):
                sb.read_file(shown)
        # The host's private TLS keys are not even mounted.
        assert sb.exec(["ls", "/etc/ssl/private"]).exit_code != 0


def test_the_sandbox_is_not_host_root(tmp_path: Path) -> None:
    with sandport.open(LocalProvider(root=tmp_path / "root")) as sb:
        sb.exec("sleep 0.3 & echo started").text  # noqa: B018 - just run it
        uid_map = sb.exec(["cat", "/proc/self/uid_map"]).text.split()
        assert uid_map[:2] == ["0", str(sandbox_user().uid)], uid_map
        assert sandbox_user().uid != 0
        sb.exec("echo made-inside > mine.txt")
        owner = (tmp_path / "root" / "sandboxes" / sb.id / "fs/work/mine.txt").stat().st_uid
        assert owner == sandbox_user().uid


def test_files_written_by_the_api_belong_to_the_sandbox(tmp_path: Path) -> None:
    """What write_file and mkdir create, the sandbox's own processes can change."""
    with sandport.open(LocalProvider(root=tmp_path / "root")) as sb:
        sb.write_file("dir/sub/f.txt", "one\n")
        assert sb.exec("echo two >> dir/sub/f.txt && mkdir dir/sub/more && rm dir/sub/f.txt").exit_code == 0


def test_file_api_has_the_sandbox_users_rights(tmp_path: Path) -> None:
    """A file the sandbox's processes cannot read (or write) is refused through the API too."""
    with sandport.open(LocalProvider(root=tmp_path / "root")) as sb:
        sb.exec("echo hidden > locked.txt && chmod 000 locked.txt && mkdir ro && echo x > ro/f && chmod 555 ro")
        assert sb.exec(["cat", "locked.txt"]).exit_code != 0
        with pytest.raises(PermissionError):
            sb.read_file("locked.txt")
        with pytest.raises(PermissionError):
            sb.write_file("locked.txt", "over")
        with pytest.raises(PermissionError):
            sb.write_file("ro/new.txt", "x")
        with pytest.raises(PermissionError):
            sb.remove("ro/f")
        sb.exec("chmod 444 ro/f")
        with pytest.raises(PermissionError):
            sb.write_file("ro/f", "over")


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


_ESCAPE = "setsid sh -c 'sleep 300 & echo $! > {pidfile}' > /dev/null 2>&1 < /dev/null &"


@pytest.mark.filterwarnings("ignore:sandport local sandboxes run UNCONFINED")
@pytest.mark.skipif(bool(cgroup_problem()), reason=f"no cgroup here: {cgroup_problem()}")
def test_unconfined_double_forked_processes_die_on_timeout_and_terminate(tmp_path: Path) -> None:
    """With isolation='none' there is no pid namespace to take escaped processes down: the
    sandbox's cgroup must."""
    with sandport.open(LocalProvider(root=tmp_path / "root"), network="open", options={"isolation": "none"}) as sb:
        result = sb.exec(f"{_ESCAPE.format(pidfile='a.pid')} sleep 30", timeout=1)
        assert result.timed_out
        escaped = int(sb.read_file("a.pid"))
        assert not _alive(escaped), "a timeout left a double-forked process running"

        sb.exec(_ESCAPE.format(pidfile="b.pid"))
        deadline = time.monotonic() + 5
        while not sb.exists("b.pid") and time.monotonic() < deadline:
            time.sleep(0.02)
        survivor = int(sb.read_file("b.pid"))
        assert _alive(survivor)  # a background job outlives its command, as in any shell
    assert not _alive(survivor), "a double-forked process outlived its sandbox"


@pytest.mark.skipif(bool(cgroup_problem()), reason=f"no cgroup here: {cgroup_problem()}")
def test_fork_bomb_is_bounded_by_the_pids_limit(tmp_path: Path) -> None:
    bomb = (
        "import os, time\n"
        "n = 0\n"
        "for _ in range(300):\n"
        "    try:\n"
        "        pid = os.fork()\n"
        "    except OSError:\n"
        "        break\n"
        "    if pid == 0:\n"
        "        time.sleep(60)\n"
        "        os._exit(0)\n"
        "    n += 1\n"
        "print(n)\n"
    )
    for resources, limit in (({"pids": 40}, 40), ({}, 1024)):
        with sandport.open(LocalProvider(root=tmp_path / f"root{limit}"), resources=resources) as sb:
            forked = int(sb.exec(["python3", "-c", bomb], timeout=60).text)
            assert forked < min(limit, 300) or limit > 300, f"{forked} processes under a limit of {limit}"
            assert sb.exec(["echo", "still usable"]).text == "still usable\n"


@pytest.mark.anyio
async def test_terminate_from_another_provider_raises_sandbox_gone_not_a_group(tmp_path: Path) -> None:
    first = LocalProvider(root=tmp_path / "root")
    sandbox = await first.create()
    other = LocalProvider(root=tmp_path / "root")
    import anyio

    async def terminate_soon() -> None:
        await anyio.sleep(0.5)
        await (await other.connect(sandbox.id)).terminate()

    async with anyio.create_task_group() as tg:
        tg.start_soon(terminate_soon)
        with pytest.raises(SandboxGone):
            await sandbox.exec(["sleep", "30"], stdin=b"x" * (1 << 20))
