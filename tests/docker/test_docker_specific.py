"""What the Docker adapter promises beyond the shared contract: hardening, secrets kept out
of the engine's metadata, limits, ports, errors with the fix in them, and faults."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
import threading
import time
import urllib.request
from datetime import timedelta
from pathlib import Path

import anyio
import pytest
from _docker_testing import BUSYBOX, DEBIAN, TEST_LABEL, docker_cli

import sandport
from sandport import CapabilityNotSupported, NetworkPolicy, ProviderUnavailable, Resources, SandboxGone
from sandport.provider import LABEL_CREATED, LABEL_CREATOR, LABEL_OWNER
from sandport_docker import DockerProvider, DockerSandbox, ImageNotFound
from sandport_docker.config import BASE_CAPABILITIES

pytestmark = pytest.mark.anyio

CAP_NUMBERS = {"CHOWN": 0, "DAC_OVERRIDE": 1, "FOWNER": 3, "FSETID": 4, "KILL": 5, "SETGID": 6, "SETUID": 7,
               "NET_BIND_SERVICE": 10, "NET_RAW": 13}  # fmt: skip
LABELS = {TEST_LABEL: "specific"}


async def create(provider: DockerProvider, made: list[DockerSandbox], **fields: object) -> DockerSandbox:
    fields.setdefault("image", DEBIAN)
    fields["labels"] = {**LABELS, **fields.get("labels", {})}  # type: ignore[dict-item]
    sandbox = await provider.create(**fields)
    assert isinstance(sandbox, DockerSandbox)
    made.append(sandbox)
    return sandbox


async def run_python(script: str) -> subprocess.CompletedProcess[bytes]:
    """Run a Python snippet in a separate process, as a later program would."""
    with anyio.fail_after(120):
        return await anyio.run_process([sys.executable, "-c", textwrap.dedent(script)], check=False)


def inspect(sandbox: DockerSandbox) -> dict[str, object]:
    data: dict[str, object] = json.loads(docker_cli("inspect", sandbox.container_id))[0]
    return data


def ours() -> set[str]:
    """Ids of the containers carrying this suite's label."""
    return set(docker_cli("ps", "-aq", "--no-trunc", "--filter", f"label={TEST_LABEL}").split())


# -- registration --------------------------------------------------------------------------


def test_registered_through_the_entry_point() -> None:
    assert "docker" in sandport.providers()
    assert isinstance(sandport.get_provider("docker"), DockerProvider)


# -- secrets -------------------------------------------------------------------------------


async def test_secrets_not_in_docker_inspect(provider: DockerProvider, made: list[DockerSandbox]) -> None:
    secret = "sp-inspect-secret-" + os.urandom(8).hex()
    sandbox = await create(provider, made, secrets={"SP_SECRET": secret}, env={"SP_PLAIN": "plain-value"})
    assert (await sandbox.exec(["printenv", "SP_SECRET"])).stdout == secret.encode() + b"\n"
    proc = await sandbox.start(["sleep", "30"])  # a running exec: its inspect too
    try:
        container = docker_cli("inspect", sandbox.container_id)
        assert "plain-value" in container, "the check must see the config it searches"
        assert secret not in container
        exec_ids = json.loads(container)[0]["ExecIDs"] or []
        assert exec_ids
        for exec_id in exec_ids:
            assert secret not in json.dumps(docker_cli_api(f"/exec/{exec_id}/json"))
        assert secret not in docker_cli("diff", sandbox.container_id)
    finally:
        await proc.kill()
        await proc.wait()
    # A snapshot holds neither the value nor the secrets file; a restored copy has no secret.
    ref = await sandbox.snapshot()
    try:
        assert secret not in docker_cli("image", "inspect", ref.id)
        assert secret not in docker_cli("history", "--no-trunc", ref.id)
        restored = await provider.restore(ref, labels=LABELS)
        made.append(restored)  # type: ignore[arg-type]
        assert (await restored.exec(["printenv", "SP_SECRET"])).exit_code == 1
        assert (await restored.exec(["sh", "-c", "cat /run/sandport/secrets.json"])).exit_code != 0
    finally:
        await restored.terminate()
        await provider.delete_snapshot(ref)


def docker_cli_api(path: str) -> object:
    import docker

    client = docker.APIClient(version="auto")
    try:
        return client._result(client._get(client._url(path)), json=True)
    finally:
        client.close()


async def test_secrets_reach_a_second_process(provider: DockerProvider, made: list[DockerSandbox]) -> None:
    sandbox = await create(provider, made, secrets={"SP_TOKEN": "second-process"})
    script = f"""
        import anyio, sandport
        async def main():
            sb = await sandport.get_provider("docker").connect({sandbox.id!r})
            print((await sb.exec(["printenv", "SP_TOKEN"])).text, end="")
        anyio.run(main)
    """
    out = await run_python(script)
    assert out.stdout == b"second-process\n", out.stderr


# -- hardening -----------------------------------------------------------------------------


def _status(text: str, field: str) -> str:
    return next(line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith(field + ":"))


async def test_capabilities_dropped_and_no_new_privileges(provider: DockerProvider, made: list[DockerSandbox]) -> None:
    sandbox = await create(provider, made)
    status = (await sandbox.exec(["cat", "/proc/self/status"])).text
    expected = sum(1 << CAP_NUMBERS[name] for name in BASE_CAPABILITIES)
    assert int(_status(status, "CapEff"), 16) == expected
    assert int(_status(status, "CapBnd"), 16) == expected
    assert _status(status, "NoNewPrivs") == "1"
    host_config = inspect(sandbox)["HostConfig"]
    assert host_config["CapDrop"] == ["ALL"]  # type: ignore[index]
    assert "no-new-privileges" in host_config["SecurityOpt"]  # type: ignore[index]
    # What the dropped capabilities forbid: raw sockets, mounts, changing the clock.
    denied = await sandbox.exec("mount -t tmpfs none /mnt || exit 7")
    assert denied.exit_code == 7


async def test_extra_capability_option(provider: DockerProvider, made: list[DockerSandbox]) -> None:
    sandbox = await create(provider, made, options={"cap_add": ["cap_net_raw"]})
    status = (await sandbox.exec(["cat", "/proc/self/status"])).text
    assert int(_status(status, "CapEff"), 16) & (1 << CAP_NUMBERS["NET_RAW"])


async def test_pids_limit_enforced(provider: DockerProvider, made: list[DockerSandbox]) -> None:
    default = await create(provider, made)
    assert inspect(default)["HostConfig"]["PidsLimit"] == 1024  # type: ignore[index]
    sandbox = await create(provider, made, resources=Resources(pids=40))
    assert inspect(sandbox)["HostConfig"]["PidsLimit"] == 40  # type: ignore[index]
    await sandbox.list_dir("/")  # sandport's helper shell is up before the limit is reached
    spawner = """
import subprocess, sys, time
started = 0
for _ in range(80):
    try:
        subprocess.Popen(["sleep", "120"])
        started += 1
    except OSError as exc:
        print("refused:", exc, file=sys.stderr, flush=True)
print("started", started, flush=True)
time.sleep(120)
"""
    result = await sandbox.exec(["python3", "-c", spawner], timeout=3)
    assert result.timed_out
    assert b"Resource temporarily unavailable" in result.stderr
    assert 20 < int(result.text.split()[1]) < 40
    # The timeout killed the whole group, even with no pid left to start a killer process.
    assert b"sleep 120" not in (await sandbox.exec(["ps", "-eo", "args"])).stdout


async def test_memory_and_cpu_limits(provider: DockerProvider, made: list[DockerSandbox]) -> None:
    sandbox = await create(provider, made, resources=Resources(memory_mb=128, cpu=0.5))
    host_config = inspect(sandbox)["HostConfig"]
    assert host_config["Memory"] == 128 * 1024 * 1024  # type: ignore[index]
    assert host_config["MemorySwap"] == 128 * 1024 * 1024, "no extra swap beyond the limit"  # type: ignore[index]
    assert host_config["NanoCpus"] == 500_000_000  # type: ignore[index]
    hog = await sandbox.exec(["python3", "-c", "x = bytearray(400 * 1024 * 1024); print('survived')"], timeout=60)
    assert hog.exit_code == 137 and b"survived" not in hog.stdout
    assert (await sandbox.exec(["true"])).exit_code == 0, "the sandbox survives its command's OOM kill"


async def test_read_only_root_option(provider: DockerProvider, made: list[DockerSandbox]) -> None:
    sandbox = await create(provider, made, options={"read_only_root": True})
    assert inspect(sandbox)["HostConfig"]["ReadonlyRootfs"] is True  # type: ignore[index]
    denied = await sandbox.exec("touch /rootfile")
    assert denied.exit_code != 0 and b"Read-only file system" in denied.stderr
    with pytest.raises(PermissionError):
        await sandbox.write_file("/etc/sandport-denied", "x")
    assert (await sandbox.exec("echo w > /workspace/w.txt && echo t > /tmp/t.txt && cat /workspace/w.txt")).ok
    await sandbox.write_file("api.txt", "through the archive API")
    await sandbox.write_file("/tmp/api.txt", "in tmp")
    assert (await sandbox.exec(["cat", "api.txt", "/tmp/api.txt"])).stdout == b"through the archive APIin tmp"
    assert await sandbox.read_file("w.txt") == b"w\n"
    # A snapshot keeps the workdir, which lives on a volume.
    ref = await sandbox.snapshot()
    try:
        restored = await provider.restore(ref, labels=LABELS)
        made.append(restored)  # type: ignore[arg-type]
        assert await restored.read_file("api.txt") == b"through the archive API"
        assert (await restored.exec("touch /rootfile")).exit_code != 0, "still read-only after restore"
    finally:
        await provider.delete_snapshot(ref)


async def test_non_root_user_option(provider: DockerProvider, made: list[DockerSandbox]) -> None:
    sandbox = await create(provider, made, user="sandbox", workdir="/home/sandbox/work")
    assert (await sandbox.exec(["id", "-u"])).text == "1000\n"
    assert (await sandbox.exec(["id", "-u"], user="root")).text == "0\n"
    await sandbox.write_file("mine.txt", "x")
    await sandbox.mkdir("made/dir")
    owners = await sandbox.exec(["stat", "-c", "%u:%g", ".", "mine.txt", "made/dir"])
    assert owners.text.split() == ["1000:1000"] * 3
    assert (await sandbox.exec("echo more >> mine.txt && touch made/dir/f")).ok, "the user can change its files"
    assert (await sandbox.exec("touch /etc/x")).exit_code != 0


async def test_user_switch_needs_no_extra_privileges(provider: DockerProvider, made: list[DockerSandbox]) -> None:
    sandbox = await create(provider, made, image=BUSYBOX)
    assert (await sandbox.exec(["id", "-u"], user="sandbox")).text == "1000\n"
    assert (await sandbox.exec(["echo", "busybox works"])).text == "busybox works\n"


# -- network and ports ---------------------------------------------------------------------


async def test_ports_published_on_loopback(provider: DockerProvider, made: list[DockerSandbox]) -> None:
    sandbox = await create(provider, made, network="open", ports=[8000])
    await sandbox.write_file("index.html", "served from the sandbox")
    server = await sandbox.start(["python3", "-m", "http.server", "8000", "--bind", "0.0.0.0"])
    try:
        address = (await sandbox.info()).ports[8000]
        host, _ = address.rsplit(":", 1)
        assert host == "127.0.0.1"
        bindings = inspect(sandbox)["NetworkSettings"]["Ports"]["8000/tcp"]  # type: ignore[index]
        assert [b["HostIp"] for b in bindings] == ["127.0.0.1"]
        body = b""
        with anyio.fail_after(30):
            while not body:
                try:
                    body = await anyio.to_thread.run_sync(lambda: urllib.request.urlopen(f"http://{address}/index.html",
                                                                                         timeout=5).read())  # fmt: skip
                except OSError:
                    await anyio.sleep(0.2)
        assert body == b"served from the sandbox"
        assert [i.ports for i in await provider.list({"sandport.creator": sandbox.spec.labels[LABEL_CREATOR]})
                if i.id == sandbox.id] == [{8000: address}]  # fmt: skip
    finally:
        await server.kill()
        await server.wait()


async def test_ports_need_a_network(provider: DockerProvider) -> None:
    before = ours()
    with pytest.raises(CapabilityNotSupported, match="network"):
        await provider.create(image=DEBIAN, ports=[8000], labels=LABELS)
    assert ours() == before


async def test_allowlist_refused(provider: DockerProvider) -> None:
    before = ours()
    with pytest.raises(CapabilityNotSupported) as error:
        await provider.create(image=DEBIAN, network=NetworkPolicy(mode="allowlist", allow=["pypi.org"]), labels=LABELS)
    assert error.value.capability == "network_allowlist"
    assert ours() == before


async def test_network_none_has_only_loopback(provider: DockerProvider, made: list[DockerSandbox]) -> None:
    sandbox = await create(provider, made)
    assert inspect(sandbox)["HostConfig"]["NetworkMode"] == "none"  # type: ignore[index]
    links = (await sandbox.exec(["cat", "/proc/net/dev"])).text
    assert [line.split(":")[0].strip() for line in links.splitlines()[2:]] == ["lo"]


# -- errors --------------------------------------------------------------------------------


async def test_missing_image_fails_at_once(provider: DockerProvider) -> None:
    before = ours()
    started = time.monotonic()
    with pytest.raises(ImageNotFound, match=re.escape("sandport-test/no-such-image:1.0")) as error:
        await provider.create(image="sandport-test/no-such-image:1.0", labels=LABELS)
    assert time.monotonic() - started < 5
    assert "never pulls" in str(error.value)
    assert ours() == before, "a failed create left a container behind"


@pytest.mark.parametrize("how", ["base_url", "DOCKER_HOST"])
async def test_engine_unavailable_says_how_to_fix(how: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    address = f"unix://{tmp_path}/no-engine.sock"
    if how == "DOCKER_HOST":
        monkeypatch.setenv("DOCKER_HOST", address)
        provider = DockerProvider()
    else:
        provider = DockerProvider(base_url=address)
    availability = await provider.check()
    assert not availability.usable
    assert "dockerd" in availability.reason and "DOCKER_HOST" in availability.reason
    started = time.monotonic()
    with pytest.raises(ProviderUnavailable) as error:
        await provider.create(image=DEBIAN)
    assert time.monotonic() - started < 5
    message = str(error.value)
    assert address in message and "dockerd" in message and "DOCKER_HOST" in message
    with pytest.raises(ProviderUnavailable):
        await provider.list()


async def test_paused_sandbox_refuses_commands_clearly(provider: DockerProvider, made: list[DockerSandbox]) -> None:
    sandbox = await create(provider, made)
    await sandbox.pause()
    try:
        with pytest.raises(sandport.ProviderError, match="paused"):
            await sandbox.exec(["true"])
        assert (await provider.connect(sandbox.id)).id == sandbox.id
    finally:
        await sandbox.resume()
    assert (await sandbox.exec(["true"])).ok


# -- faults --------------------------------------------------------------------------------


async def test_killed_from_outside_during_exec_is_gone(provider: DockerProvider, made: list[DockerSandbox]) -> None:
    sandbox = await create(provider, made)
    process = await sandbox.start(["sh", "-c", "echo started; sleep 300"])
    killer = threading.Timer(1.0, lambda: docker_cli("kill", sandbox.container_id, check=False))
    killer.start()
    started = time.monotonic()
    try:
        with anyio.fail_after(30), pytest.raises(SandboxGone):
            await sandbox.exec(["sleep", "300"])
    finally:
        killer.join()
    assert time.monotonic() - started < 30
    with anyio.fail_after(30), pytest.raises(SandboxGone):
        await process.wait()
    with pytest.raises(SandboxGone):
        await sandbox.exec(["true"])
    assert (await sandbox.info()).state == "terminated"


async def test_timeout_kills_processes_that_left_the_group(provider: DockerProvider, made: list[DockerSandbox]) -> None:
    sandbox = await create(provider, made)
    result = await sandbox.exec("setsid sleep 301 & sleep 302 & echo spawned; wait", timeout=1.5)
    assert result.timed_out and result.stdout == b"spawned\n"
    assert b"sleep 30" not in (await sandbox.exec(["ps", "-eo", "args"])).stdout


async def test_lifetime_is_enforced_by_the_container(provider: DockerProvider, made: list[DockerSandbox]) -> None:
    sandbox = await create(provider, made, lifetime=3)
    assert (await sandbox.exec(["true"])).ok
    with anyio.fail_after(30):
        while docker_cli("ps", "-aq", "--filter", f"id={sandbox.container_id}").strip():
            await anyio.sleep(0.5)
    with pytest.raises(SandboxGone):
        await sandbox.exec(["true"])


# -- snapshots, labels, gc -----------------------------------------------------------------


async def test_snapshot_restored_by_another_process(provider: DockerProvider, made: list[DockerSandbox]) -> None:
    sandbox = await create(provider, made)
    await sandbox.write_file("state/kept.txt", "from the first process")
    ref = await sandbox.snapshot()
    script = f"""
        import anyio, sandport
        from sandport import SnapshotRef
        async def main():
            provider = sandport.get_provider("docker")
            sb = await provider.restore(SnapshotRef.model_validate_json({ref.model_dump_json()!r}))
            try:
                print((await sb.read_file("state/kept.txt")).decode())
            finally:
                await sb.terminate()
        anyio.run(main)
    """
    try:
        out = await run_python(script)
        assert out.stdout == b"from the first process\n", out.stderr
    finally:
        await provider.delete_snapshot(ref)
    assert not docker_cli("images", "-q", ref.id).strip()


async def test_labels_record_owner_and_creation(provider: DockerProvider, made: list[DockerSandbox]) -> None:
    sandbox = await create(provider, made, labels={"project": "sp"})
    labels = inspect(sandbox)["Config"]["Labels"]  # type: ignore[index]
    for key in (LABEL_OWNER, LABEL_CREATED, LABEL_CREATOR, "sandport.spec"):
        assert key in labels
    assert labels["project"] == "sp"
    assert [i.id for i in await provider.list({"project": "sp", TEST_LABEL: "specific"})] == [sandbox.id]


async def test_gc_removes_orphans(provider: DockerProvider) -> None:
    script = f"""
        import anyio, sandport
        async def main():
            sb = await sandport.get_provider("docker").create(image={DEBIAN!r}, labels={{"{TEST_LABEL}": "orphan"}})
            print(sb.id)
        anyio.run(main)
    """
    out = await run_python(script)
    orphan = out.stdout.decode().strip()
    assert orphan, out.stderr
    assert orphan in {i.id for i in await provider.list({TEST_LABEL: "orphan"})}
    assert orphan not in await provider.gc(older_than=timedelta(hours=1)), "too young to collect"
    removed = await provider.gc()
    assert orphan in removed
    assert not docker_cli("ps", "-aq", "--filter", f"id={orphan}").strip()


# -- the shell fast path -------------------------------------------------------------------


async def test_shell_round_trip_is_fast(provider: DockerProvider, made: list[DockerSandbox]) -> None:
    sandbox = await create(provider, made)
    async with await sandbox.open_shell() as shell:
        assert (await shell.run("cd /tmp && X=1")).ok
        assert (await shell.run("echo $X $(pwd)")).stdout == b"1 /tmp\n"
        times = []
        for _ in range(20):
            started = time.perf_counter()
            await shell.run("true")
            times.append(time.perf_counter() - started)
    exec_started = time.perf_counter()
    await sandbox.exec(["true"])
    exec_time = time.perf_counter() - exec_started
    assert sorted(times)[10] < exec_time / 2, "a shell round trip must be much cheaper than an exec"
