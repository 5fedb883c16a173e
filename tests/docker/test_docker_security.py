"""Attacks on the Docker adapter from a hostile program inside the sandbox (issue 12).

The program in a sandbox may be root in its container. Each test below performs one attack
from the security review and checks that the harness side holds: what the sandbox rewrites
is never trusted, file operations of a non-root sandbox never act with root's rights, kills
reach every process a command started, a sandbox terminated elsewhere is ``SandboxGone``,
and the engine's own errors are never passed off as a command's output.
"""

from __future__ import annotations

import json
import os
import resource
import stat
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

import anyio
import pytest
from _docker_testing import DEBIAN, TEST_LABEL, docker_cli

from sandport import ProviderError, SandboxGone
from sandport_docker import DockerProvider, DockerSandbox

pytestmark = pytest.mark.anyio

LABELS = {TEST_LABEL: "security"}
SECRETS_FILE = "/run/sandport/secrets.json"
NOBODY_HOME = "/srv/nobody"  # a workdir the image lacks: created owned by the sandbox's user
PROCESS_LIMIT = 2 * 1024**3  # address space of a CLI run: a runaway read fails, not the host


async def create(provider: DockerProvider, made: list[DockerSandbox], **fields: object) -> DockerSandbox:
    fields.setdefault("image", DEBIAN)
    sandbox = await provider.create(labels=LABELS, **fields)
    assert isinstance(sandbox, DockerSandbox)
    made.append(sandbox)
    return sandbox


async def connect(provider: DockerProvider, sandbox: DockerSandbox) -> DockerSandbox:
    other = await provider.connect(sandbox.id)
    assert isinstance(other, DockerSandbox)
    return other


def container_exists(sandbox: DockerSandbox) -> bool:
    return bool(docker_cli("ps", "-aq", "--filter", f"id={sandbox.container_id}").strip())


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (PROCESS_LIMIT, PROCESS_LIMIT))


async def cli_rm(sandbox: DockerSandbox) -> subprocess.CompletedProcess[bytes]:
    """``sandport rm`` in a fresh process (memory and time bounded), as a user would run it."""
    argv = [sys.executable, "-m", "sandport.cli", "rm", "--provider", "docker", sandbox.id]
    run = partial(subprocess.run, argv, capture_output=True, timeout=90, check=False, preexec_fn=_limit_memory)
    return await anyio.to_thread.run_sync(run)


async def tamper(sandbox: DockerSandbox, script: str) -> None:
    """Run ``script`` as root in the sandbox: the attacker's move."""
    result = await sandbox.exec(script, user="root")
    assert result.ok, result


async def ps(sandbox: DockerSandbox) -> str:
    return (await sandbox.exec(["ps", "-eo", "pid,ppid,pgid,sid,args"], user="root")).text


# -- 8: the secrets file is the sandbox's, not the harness's --------------------------------


async def test_secrets_file_linked_to_dev_zero_cannot_stall_rm(
    provider: DockerProvider, made: list[DockerSandbox]
) -> None:
    sandbox = await create(provider, made, secrets={"SP_TOKEN": "sp-zero-" + os.urandom(6).hex()})
    await tamper(sandbox, f"rm -f {SECRETS_FILE} && ln -s /dev/zero {SECRETS_FILE}")
    started = time.monotonic()
    out = await cli_rm(sandbox)
    assert out.returncode == 0, out.stderr.decode()[-2000:]
    assert time.monotonic() - started < 60
    assert not container_exists(sandbox)


async def test_secrets_file_rewritten_cannot_block_rm_or_terminate(
    provider: DockerProvider, made: list[DockerSandbox]
) -> None:
    sandbox = await create(provider, made, secrets={"SP_TOKEN": "sp-json-" + os.urandom(6).hex()})
    await tamper(sandbox, f"printf 'not json {{' > {SECRETS_FILE}")
    other = await connect(provider, sandbox)  # connecting never reads them
    with pytest.raises(ProviderError, match="tampered"):
        await other.exec(["true"])
    await other.terminate()  # and terminate does not need them
    assert not container_exists(sandbox)

    second = await create(provider, made, secrets={"SP_TOKEN": "sp-json-" + os.urandom(6).hex()})
    await tamper(second, f"printf 'not json {{' > {SECRETS_FILE}")
    out = await cli_rm(second)
    assert out.returncode == 0, out.stderr.decode()[-2000:]
    assert not container_exists(second)


async def test_planted_secrets_are_neither_injected_nor_redacted(
    provider: DockerProvider, made: list[DockerSandbox], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    audit = tmp_path / "audit.jsonl"
    monkeypatch.setenv("SANDPORT_AUDIT_LOG", str(audit))
    real = "sp-real-" + os.urandom(6).hex()
    sandbox = await create(provider, made, secrets={"SP_TOKEN": real})
    planted = json.dumps({"SP_TOKEN": "the", "LD_PRELOAD": "/tmp/evil.so"})
    await tamper(sandbox, f"printf '%s' '{planted}' > {SECRETS_FILE}")
    for attempt in (
        lambda sb: sb.exec(["printenv", "SP_TOKEN"]),
        lambda sb: sb.start(["printenv", "LD_PRELOAD"]),
        lambda sb: sb.open_shell(),
    ):
        other = await connect(provider, sandbox)
        with pytest.raises(ProviderError, match="tampered") as error:
            await attempt(other)
        assert "the" not in other.spec.secret_env().values()
        assert "/docker/secrets.key" in str(error.value), "the message names the key it checked with"
    # The audit log keeps innocent words: "the" never became a redaction target.
    other = await connect(provider, sandbox)
    await other.write_file("the-note.txt", "the quick fox")
    assert await other.read_file("the-note.txt") == b"the quick fox"
    events = [json.loads(line) for line in audit.read_text().splitlines()]
    assert any(e["details"].get("path", "").endswith("/the-note.txt") for e in events)
    assert "[REDACTED]" not in audit.read_text()
    # The creating object, which never read the file back, still injects the real value.
    assert (await sandbox.exec(["printenv", "SP_TOKEN"])).text == real + "\n"


async def test_untampered_secrets_still_reach_a_connected_sandbox(
    provider: DockerProvider, made: list[DockerSandbox]
) -> None:
    from sandport_docker.secretstore import key_path

    value = "sp-sealed-" + os.urandom(6).hex()
    sandbox = await create(provider, made, secrets={"SP_TOKEN": value})
    other = await connect(provider, sandbox)
    assert (await other.exec(["printenv", "SP_TOKEN"])).text == value + "\n"
    assert other._redactor.text(value) == "[REDACTED]"
    key = key_path()
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert value not in docker_cli("inspect", sandbox.container_id)


async def test_restored_snapshot_has_no_stale_seal(provider: DockerProvider, made: list[DockerSandbox]) -> None:
    """A snapshot image inherits its container's labels; the restored sandbox has no
    secrets and must not look for any."""
    sandbox = await create(provider, made, secrets={"SP_TOKEN": "sp-snap-" + os.urandom(6).hex()})
    ref = await sandbox.snapshot()
    try:
        restored = await provider.restore(ref, labels=LABELS)
        assert isinstance(restored, DockerSandbox)
        made.append(restored)
        other = await connect(provider, restored)
        assert (await other.exec(["printenv", "SP_TOKEN"])).exit_code == 1
    finally:
        await provider.delete_snapshot(ref)


# -- 10: a non-root sandbox's file operations have that user's rights ---------------------


async def test_user_read_through_symlink_cannot_reach_root_files(
    provider: DockerProvider, made: list[DockerSandbox], tmp_path: Path
) -> None:
    sandbox = await create(provider, made, user="nobody", workdir=NOBODY_HOME)
    assert (await sandbox.exec("ln -s /etc/shadow link && ln -s /root rootdir && id -u")).text == "65534\n"
    for path in ("link", "/etc/shadow"):
        with pytest.raises(PermissionError):
            await sandbox.read_file(path)
    with pytest.raises(PermissionError):
        await sandbox.list_dir("rootdir")
    with pytest.raises(PermissionError):
        await sandbox.download("link", tmp_path / "shadow")
    assert not (tmp_path / "shadow").exists()


async def test_user_write_through_symlink_cannot_touch_root_files(
    provider: DockerProvider, made: list[DockerSandbox], tmp_path: Path
) -> None:
    sandbox = await create(provider, made, user="nobody", workdir=NOBODY_HOME)
    await sandbox.exec("ln -s /etc/ld.so.preload preload && ln -s /etc etc")
    for path in ("preload", "/etc/ld.so.preload", "etc/ld.so.preload"):
        with pytest.raises(PermissionError):
            await sandbox.write_file(path, "/tmp/evil.so\n")
    with pytest.raises(PermissionError):
        await sandbox.mkdir("etc/evil.d")
    with pytest.raises(PermissionError):
        await sandbox.remove("etc/debian_version")
    (tmp_path / "ld.so.preload").write_text("/tmp/evil.so\n")
    with pytest.raises(PermissionError):
        await sandbox.upload(tmp_path / "ld.so.preload", "etc/ld.so.preload")
    check = await sandbox.exec(
        "test ! -e /etc/ld.so.preload && test ! -e /etc/evil.d && test -f /etc/debian_version", user="root"
    )
    assert check.ok, "a root-owned file was created or removed"


async def test_user_file_operations_still_work(
    provider: DockerProvider, made: list[DockerSandbox], tmp_path: Path
) -> None:
    sandbox = await create(provider, made, user="sandbox", workdir="/home/sandbox/work")
    await sandbox.write_file("dir/a.txt", b"\x00binary\xff", mode=0o640)
    assert await sandbox.read_file("dir/a.txt") == b"\x00binary\xff"
    info = await sandbox.stat("dir/a.txt")
    assert (info.type, info.size, info.mode) == ("file", 8, 0o640)
    await sandbox.write_file("dir/a.txt", "replaced")  # keeps the mode
    assert (await sandbox.stat("dir/a.txt")).mode == 0o640
    await sandbox.exec("ln -s a.txt dir/link")
    await sandbox.write_file("dir/link", "through my own link")
    assert await sandbox.read_file("dir/a.txt") == b"through my own link"
    await sandbox.mkdir("made/deep")
    assert sorted(e.name for e in await sandbox.list_dir("dir")) == ["a.txt", "link"]
    with pytest.raises(FileNotFoundError):
        await sandbox.read_file("missing.txt")
    with pytest.raises(IsADirectoryError):
        await sandbox.read_file("dir")
    source = tmp_path / "tree"
    (source / "sub").mkdir(parents=True)
    (source / "sub" / "run.sh").write_text("#!/bin/sh\n")
    (source / "sub" / "run.sh").chmod(0o755)
    (source / "big.bin").write_bytes(os.urandom(3 * 1024 * 1024))
    await sandbox.upload(source, "uploaded")
    owners = await sandbox.exec(["stat", "-c", "%u %a %n", "uploaded/sub/run.sh", "made/deep", "dir/a.txt"])
    assert owners.text.split("\n")[0] == "1000 755 uploaded/sub/run.sh"
    assert all(line.startswith("1000 ") for line in owners.text.splitlines())
    await sandbox.download("uploaded", tmp_path / "back")
    assert (tmp_path / "back" / "big.bin").read_bytes() == (source / "big.bin").read_bytes()
    assert stat.S_IMODE((tmp_path / "back" / "sub" / "run.sh").stat().st_mode) == 0o755
    await sandbox.remove("uploaded", recursive=True)
    assert not await sandbox.exists("uploaded")


# -- 12: kills reach double-forked setsid processes ----------------------------------------


@pytest.mark.parametrize("user", [None, "nobody"])
async def test_timeout_kills_double_forked_setsid_processes(
    provider: DockerProvider, made: list[DockerSandbox], user: str | None
) -> None:
    sandbox = await create(provider, made, user=user, workdir=NOBODY_HOME)
    result = await sandbox.exec("setsid sh -c 'sleep 301 & sleep 302 &'; echo spawned; sleep 303", timeout=2)
    assert result.timed_out and result.stdout == b"spawned\n"
    left = await ps(sandbox)
    assert "sleep 30" not in left, left


async def test_kill_reaches_double_forked_setsid_processes(provider: DockerProvider, made: list[DockerSandbox]) -> None:
    sandbox = await create(provider, made)
    process = await sandbox.start("setsid sh -c '(setsid sleep 311 &) ; sleep 312 &'; echo spawned; sleep 313")
    async for chunk in process:
        if b"spawned" in chunk.data:
            break
    await anyio.sleep(0.3)
    assert "sleep 311" in await ps(sandbox)
    await process.kill()
    await process.wait()
    left = await ps(sandbox)
    assert "sleep 31" not in left, left


async def test_timeout_of_a_flooding_command_is_prompt(provider: DockerProvider, made: list[DockerSandbox]) -> None:
    """The engine finishes a container's exits one at a time, each once its output is read:
    a kill must keep reading the command it kills, or the killer waits behind it."""
    sandbox = await create(provider, made)
    with anyio.fail_after(60):
        result = await sandbox.exec("yes sandport", timeout=1)
    assert result.timed_out and result.truncated
    assert result.duration < 10
    process = await sandbox.start(["yes"])
    await anyio.sleep(0.5)
    started = time.monotonic()
    with anyio.fail_after(60):
        await process.kill()
        assert (await process.wait()).exit_code == 137
    assert time.monotonic() - started < 10


# -- 13: terminated elsewhere is SandboxGone, whatever the engine says ---------------------


async def _until_gone(sandbox: DockerSandbox, argv: list[str], failures: list[str]) -> None:
    """Run ``argv`` with ``check=True`` until the sandbox is gone; anything else is a failure."""
    try:
        while True:
            await sandbox.exec(argv, check=True)
    except SandboxGone:
        pass
    except Exception as exc:
        failures.append(repr(exc))


async def test_terminated_by_another_object_is_sandbox_gone(provider: DockerProvider) -> None:
    failures: list[str] = []
    for _ in range(3):
        sandbox = await provider.create(image=DEBIAN, labels=LABELS)
        assert isinstance(sandbox, DockerSandbox)
        other = await provider.connect(sandbox.id)
        with anyio.fail_after(120):
            async with anyio.create_task_group() as group:
                for argv in (["true"], ["true"], ["true"], ["sleep", "300"]):
                    group.start_soon(_until_gone, sandbox, argv, failures)
                await anyio.sleep(0.7)
                await other.terminate()
        await sandbox.terminate()
    assert not failures, failures


# -- 15: the engine's errors are ProviderError; /dev/null is not needed --------------------


async def test_removed_dev_null_breaks_no_file_operation(provider: DockerProvider, made: list[DockerSandbox]) -> None:
    sandbox = await create(provider, made)
    await sandbox.list_dir("/")  # sandport's helper shell is up before the sandbox acts
    await tamper(sandbox, "rm /dev/null")
    await sandbox.write_file("after.txt", "still works")
    assert await sandbox.read_file("after.txt") == b"still works"
    assert "after.txt" in [e.name for e in await sandbox.list_dir(".")]
    await sandbox.mkdir("d/e")
    await sandbox.remove("after.txt")
    assert not await sandbox.exists("after.txt")
    with pytest.raises(ProviderError, match="/dev/null") as error:
        await sandbox.exec(["echo", "hi"])
    assert not isinstance(error.value, SandboxGone)
    assert await sandbox.list_dir("/dev") is not None
    assert "null" not in [e.name for e in await sandbox.list_dir("/dev")], "sandport recreated /dev/null"


async def test_engine_errors_are_never_command_output(provider: DockerProvider, made: list[DockerSandbox]) -> None:
    sandbox = await create(provider, made)
    with pytest.raises(ProviderError, match="unable to find user") as error:
        await sandbox.exec(["true"], user="no-such-user")
    assert not isinstance(error.value, SandboxGone)
    assert (await sandbox.exec(["echo", "ok"])).stdout == b"ok\n"


async def test_helper_output_is_capped(provider: DockerProvider, made: list[DockerSandbox]) -> None:
    sandbox = await create(provider, made)
    await sandbox.write_file("a.txt", "x")
    # The sandbox replaces a tool sandport's helper calls with one that floods its output.
    await tamper(sandbox, "printf '#!/bin/sh\\nhead -c 40000000 /dev/zero\\n' > /usr/local/bin/stat && "
                          "chmod 755 /usr/local/bin/stat")  # fmt: skip
    with anyio.fail_after(60), pytest.raises(ProviderError, match="printed more than"):
        await sandbox.list_dir(".")
    await tamper(sandbox, "rm /usr/local/bin/stat")
    assert [e.name for e in await sandbox.list_dir(".")] == ["a.txt"]


def test_key_is_private(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from sandport_docker import secretstore
    from sandport_docker.secretstore import key_path

    monkeypatch.setenv("SANDPORT_HOME", str(tmp_path / "home"))
    sealed = secretstore.seal(b"{}")
    key = key_path()
    assert key.is_relative_to(tmp_path) and stat.S_IMODE(key.stat().st_mode) == 0o600
    assert secretstore.unseal(b"{}", sealed, "x") == {}
    with pytest.raises(ProviderError, match="tampered"):
        secretstore.unseal(b'{"A": "b"}', sealed, "x")
