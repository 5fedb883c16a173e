"""The ``sandport`` CLI, run for real against the local provider (bubblewrap).

Most tests drive the typer app in-process with ``CliRunner``; the ones about live
streaming, signals, stdin pipes and the one-line error format run ``python -m sandport.cli``
in a subprocess, as a user would.
"""

from __future__ import annotations

import json
import os
import re
import signal
import stat
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
import typer.core
import typer.main
from typer.testing import CliRunner, Result

import sandport
from sandport import plugins
from sandport.cli import app
from sandport.hookspecs import Register
from sandport.local.isolation import bwrap_problem
from sandport.local.provider import LocalProvider
from sandport.provider import Availability


@pytest.fixture(autouse=True)
def _local_provider_usable() -> None:
    """These tests drive the real local provider: without it they fail, never skip."""
    if problem := bwrap_problem():
        pytest.fail(f"local provider unusable: {problem}")


# Generous bounds: these guard against hangs, they do not measure speed.
SLOW = 60


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A private SANDPORT_HOME per test, no audit log, and only the built-in providers
    (entry-point plugins off), so that adapters installed alongside cannot change results."""
    path = tmp_path / "sandport-home"
    monkeypatch.setenv("SANDPORT_HOME", str(path))
    monkeypatch.setenv("SANDPORT_AUDIT_LOG", "off")
    monkeypatch.setenv("SANDPORT_PLUGINS", "")
    for name in ("SANDPORT_PROVIDER", "SANDPORT_DEBUG"):
        monkeypatch.delenv(name, raising=False)
    plugins.reset()
    yield path
    plugins.reset()


def cli(*args: str, input: str | bytes | None = None) -> Result:
    """Run the CLI in-process."""
    return CliRunner().invoke(app, list(args), input=input, catch_exceptions=False)


def sp(*args: str, input: bytes | None = None, timeout: float = SLOW, **env: str) -> subprocess.CompletedProcess[str]:
    """Run ``python -m sandport.cli`` in a subprocess (stdin empty unless ``input``)."""
    return subprocess.run(
        [sys.executable, "-m", "sandport.cli", *args],
        input=input.decode() if input is not None else None,
        stdin=None if input is not None else subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **env},
        check=False,
    )


def spawn(*args: str, **kwargs: Any) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "sandport.cli", *args], **kwargs)


def spawn_running_command() -> subprocess.Popen[bytes]:
    """``sandport run`` of a long command, returned once the command has started."""
    proc = spawn("run", "--", "sh", "-c", "echo ready; sleep 60",
                 stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    assert proc.stdout is not None
    assert proc.stdout.readline() == b"ready\n"
    return proc


def as_json(result: Result | subprocess.CompletedProcess[str]) -> Any:
    return json.loads(result.stdout)


def listed_ids(*extra: str) -> list[str]:
    result = cli("ls", "--json", *extra)
    assert result.exit_code == 0, result.stderr
    return [item["id"] for item in as_json(result)]


def kept_sandbox(*labels: str) -> str:
    """A sandbox that outlives the command, made with ``run --keep``."""
    result = cli("run", "--keep", "--json", *labels, "--", "true")
    assert result.exit_code == 0, result.stderr
    sandbox_id: str = as_json(result)["sandbox_id"]
    return sandbox_id


def orphan_sandbox() -> str:
    """A sandbox created by a program that exited without terminating it."""
    script = textwrap.dedent(
        """
        import anyio, sandport

        async def main():
            sandbox = await sandport.get_provider("local").create()
            print(sandbox.id)

        anyio.run(main)
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=SLOW, check=True)
    return done.stdout.strip()


# -- help and usage ---------------------------------------------------------------------------


def test_help_documents_exit_codes() -> None:
    result = cli("--help")
    assert result.exit_code == 0
    for code in ("124", "130", "provider not installed", "not found", "capability not supported"):
        assert code in result.stdout
    assert "sh -c" in cli("run", "--help").stdout


@pytest.mark.parametrize(
    "args",
    [
        ["run"],  # no command
        ["run", "--env", "SANDPORT_TEST_UNSET_VARIABLE", "--", "true"],  # bare NAME that is not set
        ["run", "--label", "novalue", "--", "true"],
        ["run", "--timeout", "soon", "--", "true"],
        ["run", "--network", "sometimes", "--", "true"],
        ["run", "--workdir", "relative/dir", "--", "true"],
        ["gc", "--older-than", "yesterday"],
        ["cp", "a", "b"],  # neither side in a sandbox
        ["frobnicate"],
    ],
)
def test_usage_errors_exit_2_with_one_line(args: list[str]) -> None:
    done = sp(*args)
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("sandport: error: ")
    assert done.stderr.count("\n") == 1
    assert "Traceback" not in done.stderr


def test_errors_are_one_line_and_debug_shows_the_traceback() -> None:
    done = sp("exec", "sp-000000000000", "--", "true")
    assert done.returncode == 4
    assert done.stderr == "sandport: error: local: no sandbox with id 'sp-000000000000'\n"
    debug = sp("exec", "sp-000000000000", "--", "true", SANDPORT_DEBUG="1")
    assert debug.returncode == 4
    assert "Traceback" in debug.stderr and "SandboxNotFound" in debug.stderr


# -- run ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cmd", "code"),
    [(["true"], 0), (["sh", "-c", "exit 3"], 3), (["definitely-not-a-program-sandport"], 127)],
)
def test_run_exits_with_the_commands_exit_code(cmd: list[str], code: int) -> None:
    result = cli("run", "--", *cmd)
    assert result.exit_code == code, result.stderr


def test_run_streams_stdout_and_stderr_separately() -> None:
    result = cli("run", "--", "sh", "-c", "echo to-out; echo to-err >&2")
    assert result.exit_code == 0
    assert result.stdout == "to-out\n"
    assert result.stderr == "to-err\n"


def test_run_passes_argv_without_resplitting() -> None:
    result = cli("run", "--", "printf", "%s|", "a b", "c  d", "$HOME", "*")
    assert result.stdout == "a b|c  d|$HOME|*|"


def test_run_options_stop_at_the_command() -> None:
    result = cli("run", "echo", "--json", "--keep")
    assert result.exit_code == 0
    assert result.stdout == "--json --keep\n"


def test_run_env_secret_workdir_and_network_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SANDPORT_TEST_TOKEN", "s3cret")
    result = cli(
        "run",
        "-e",
        "A=1",
        "--env",
        "B=x=y",
        "--secret",
        "SANDPORT_TEST_TOKEN",
        "--workdir",
        "/work/dir",
        "--",
        "sh",
        "-c",
        'echo "$A $B $SANDPORT_TEST_TOKEN $(pwd)"',
    )
    assert result.exit_code == 0, result.stderr
    assert result.stdout == "1 x=y s3cret /work/dir\n"


def test_run_forwards_piped_stdin() -> None:
    assert cli("run", "--", "cat", input="line one\nline two\n").stdout == "line one\nline two\n"
    done = sp("run", "--", "wc", "-l", input=b"a\nb\nc\n")
    assert done.returncode == 0 and done.stdout.strip() == "3"


def test_run_streams_output_live() -> None:
    """The command waits for a line we only send after reading its first output line: if
    output were buffered until the end, this would deadlock (and time out)."""
    proc = spawn(
        "run",
        "--",
        "sh",
        "-c",
        "echo first; read x; echo got $x",
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None and proc.stdin is not None
        assert proc.stdout.readline() == b"first\n"
        proc.stdin.write(b"hello\n")
        proc.stdin.close()
        assert proc.stdout.read() == b"got hello\n"
        assert proc.wait(timeout=SLOW) == 0
    finally:
        proc.kill()
        proc.wait()


def test_run_shows_first_line_before_a_sleep_ends() -> None:
    proc = spawn(
        "run",
        "--",
        "sh",
        "-c",
        "echo one; sleep 1; echo two",
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == b"one\n"
        assert proc.poll() is None, "the first line should arrive while the command still sleeps"
        assert proc.stdout.read() == b"two\n"
        assert proc.wait(timeout=SLOW) == 0
    finally:
        proc.kill()
        proc.wait()


def test_run_timeout_exits_124_keeps_partial_output_and_cleans_up() -> None:
    started = time.monotonic()
    result = cli("run", "--timeout", "1", "--", "sh", "-c", "echo partial; sleep 60")
    assert result.exit_code == 124
    assert time.monotonic() - started < 30
    assert result.stdout == "partial\n"
    assert "timed out" in result.stderr
    assert listed_ids() == []


def test_run_timeout_json() -> None:
    result = cli("run", "--json", "--timeout", "500ms", "--", "sleep", "60")
    assert result.exit_code == 124
    data = as_json(result)
    assert data["timed_out"] is True and data["exit_code"] == 124


def test_run_json_collects_output() -> None:
    result = cli("run", "--json", "--", "sh", "-c", "printf out; printf err >&2; exit 7")
    assert result.exit_code == 7
    data = as_json(result)
    assert data["stdout"] == "out" and data["stderr"] == "err"
    assert data["exit_code"] == 7 and data["provider"] == "local" and data["kept"] is False
    assert data["sandbox_id"].startswith("sp-")


def test_run_json_reports_non_utf8_output_as_base64() -> None:
    data = as_json(cli("run", "--json", "--", "printf", "\\377\\376"))
    assert data["stdout_base64"] == "//4="


def test_run_terminates_its_sandbox() -> None:
    assert cli("run", "--", "true").exit_code == 0
    assert listed_ids("--all") == []


def test_run_ctrl_c_kills_the_command_and_removes_the_sandbox(home: Path) -> None:
    proc = spawn_running_command()
    try:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=SLOW)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 130
    assert b"interrupted" in err and b"Traceback" not in err
    assert listed_ids("--all") == []
    assert not any((home / "local" / "sandboxes").iterdir())


def test_run_into_a_closed_pipe_stops_quietly_and_cleans_up(tmp_path: Path) -> None:
    errors = tmp_path / "stderr.txt"
    done = subprocess.run(
        f"{sys.executable} -m sandport.cli run -- yes 2>{errors} </dev/null | head -n 2; echo ${{PIPESTATUS[0]}}",
        shell=True,
        executable="/bin/bash",
        capture_output=True,
        text=True,
        timeout=SLOW,
        check=False,
    )
    assert done.stdout == "y\ny\n141\n"  # 128 + SIGPIPE, as a pipeline's writer gets
    assert errors.read_text() == ""
    assert listed_ids("--all") == []


def test_run_image_on_local_is_capability_not_supported() -> None:
    result = cli("run", "--image", "python:3.12", "--", "true")
    assert result.exit_code == 5
    assert "does not support images" in result.stderr


def test_run_no_isolation_is_explicit_and_needs_open_network() -> None:
    refused = sp("run", "--no-isolation", "--", "true")
    assert refused.returncode == 2 and "--network open" in refused.stderr
    allowed = sp("run", "--no-isolation", "--network", "open", "--", "true")
    assert allowed.returncode == 0, allowed.stderr
    assert "UNCONFINED" in allowed.stderr


def test_unknown_provider_exits_3_with_the_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    result = cli("run", "--provider", "docker", "--", "true")
    assert result.exit_code == 3
    assert "pip install sandport-docker" in result.stderr
    monkeypatch.setenv("SANDPORT_PROVIDER", "docker")
    assert cli("exec", "sp-123", "--", "true").exit_code == 3
    done = sp("ls", "--provider", "docker")
    assert done.returncode == 3 and done.stderr.count("\n") == 1


# -- keep, exec, ls, rm -----------------------------------------------------------------------


def test_keep_then_exec_ls_and_rm() -> None:
    result = cli("run", "--keep", "--label", "team=blue", "--", "sh", "-c", "echo data > kept.txt")
    assert result.exit_code == 0
    match = re.search(r"kept sandbox (sp-\w+)", result.stderr)
    assert match, result.stderr
    sandbox_id = match.group(1)

    assert cli("exec", sandbox_id, "--", "cat", "kept.txt").stdout == "data\n"
    assert cli("exec", sandbox_id, "--cwd", "/tmp", "--", "pwd").stdout == "/tmp\n"
    assert cli("exec", sandbox_id, "-e", "X=42", "--", "sh", "-c", "echo $X").stdout == "42\n"
    assert cli("exec", sandbox_id, "--", "sh", "-c", "exit 9").exit_code == 9
    assert cli("exec", sandbox_id, "--timeout", "1", "--", "sleep", "60").exit_code == 124
    assert cli("exec", sandbox_id, "--", "cat", input="piped").stdout == "piped"
    exec_json = as_json(cli("exec", "--json", sandbox_id, "--", "echo", "hi"))
    assert exec_json["stdout"] == "hi\n" and exec_json["sandbox_id"] == sandbox_id

    listing = as_json(cli("ls", "--json"))
    [entry] = [item for item in listing if item["id"] == sandbox_id]
    assert entry["labels"]["team"] == "blue" and entry["labels"]["sandport.keep"] == "1"
    assert entry["provider"] == "local" and entry["state"] == "running" and entry["isolation"] == "bwrap"
    table = cli("ls")
    assert sandbox_id in table.stdout and "team=blue" in table.stdout

    removed = cli("rm", sandbox_id)
    assert removed.exit_code == 0 and removed.stdout == f"{sandbox_id}\n"
    assert sandbox_id not in listed_ids()
    again = cli("rm", sandbox_id)
    assert again.exit_code == 4
    assert "no sandbox with id" in again.stderr
    assert cli("exec", sandbox_id, "--", "true").exit_code == 4


def test_rm_removes_the_known_ids_and_reports_the_unknown() -> None:
    first, second = kept_sandbox(), kept_sandbox()
    result = cli("rm", "--json", first, "sp-doesnotexist", second)
    assert result.exit_code == 4
    data = as_json(result)
    assert data["removed"] == [first, second]
    assert list(data["not_found"]) == ["sp-doesnotexist"]
    assert listed_ids() == []


def test_ls_shows_only_my_sandboxes_unless_all(home: Path) -> None:
    mine = kept_sandbox()
    # Someone else's sandbox in the same store: rewrite the owner label of a second one.
    theirs = kept_sandbox()
    meta_file = home / "local" / "sandboxes" / theirs / "meta.json"
    meta = json.loads(meta_file.read_text())
    meta["spec"]["labels"]["sandport.owner"] = "someone@elsewhere"
    meta_file.write_text(json.dumps(meta))
    assert listed_ids() == [mine]
    assert sorted(listed_ids("--all")) == sorted([mine, theirs])


# -- cp ---------------------------------------------------------------------------------------


def _make_tree(root: Path) -> dict[str, bytes]:
    files = {
        "README.md": b"# project\n",
        "src/main.py": b"print('hi')\n",
        "src/pkg/data.bin": bytes(range(256)) * 8,
        "bin/run.sh": b"#!/bin/sh\necho run\n",
        "with space/file name.txt": "ünïcode\n".encode(),
    }
    for name, data in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    (root / "bin/run.sh").chmod(0o755)
    (root / "empty").mkdir()
    return files


def test_cp_directory_tree_both_directions(tmp_path: Path) -> None:
    sandbox_id = kept_sandbox()
    tree = tmp_path / "proj"
    files = _make_tree(tree)

    up = cli("cp", "--json", str(tree), f"{sandbox_id}:copied")
    assert up.exit_code == 0, up.stderr
    copied = as_json(up)
    assert copied["direction"] == "upload" and copied["destination"] == "/workspace/copied"
    assert copied["type"] == "dir" and copied["files"] == len(files)
    assert copied["bytes"] == sum(len(d) for d in files.values())

    listing = cli("exec", sandbox_id, "--", "sh", "-c", "cd copied && find . -type f | sort")
    assert listing.stdout.split("\n")[:-1] == sorted(f"./{name}" for name in files)
    assert cli("exec", sandbox_id, "--", "test", "-x", "copied/bin/run.sh").exit_code == 0
    assert cli("exec", sandbox_id, "--", "test", "-d", "copied/empty").exit_code == 0
    assert cli("exec", sandbox_id, "--", "cat", "copied/with space/file name.txt").stdout == "ünïcode\n"

    # Into an existing directory: lands under the source's own name.
    out = tmp_path / "out"
    out.mkdir()
    down = cli("cp", "--json", f"{sandbox_id}:/workspace/copied", str(out))
    assert down.exit_code == 0, down.stderr
    assert as_json(down)["destination"] == str(out / "copied")
    for name, data in files.items():
        assert (out / "copied" / name).read_bytes() == data
    assert (out / "copied" / "bin/run.sh").stat().st_mode & stat.S_IXUSR
    assert (out / "copied" / "empty").is_dir()

    # Human output is one summary line.
    again = cli("cp", str(tree / "README.md"), f"{sandbox_id}:copied/")
    assert again.exit_code == 0 and again.stdout.startswith("copied ")
    assert cli("exec", sandbox_id, "--", "cat", "copied/README.md").stdout == "# project\n"


def test_cp_single_files_and_renames(tmp_path: Path) -> None:
    sandbox_id = kept_sandbox()
    source = tmp_path / "notes.txt"
    source.write_text("notes\n")
    cli("exec", sandbox_id, "--", "mkdir", "-p", "docs")
    assert cli("cp", str(source), f"{sandbox_id}:docs").exit_code == 0  # existing dir: docs/notes.txt
    assert cli("cp", str(source), f"{sandbox_id}:renamed.txt").exit_code == 0
    assert cli("exec", sandbox_id, "--", "cat", "docs/notes.txt", "renamed.txt").stdout == "notes\nnotes\n"
    target = tmp_path / "back.txt"
    result = cli("cp", "--json", f"{sandbox_id}:renamed.txt", str(target))
    assert result.exit_code == 0
    assert as_json(result)["type"] == "file" and target.read_text() == "notes\n"


def test_cp_errors(tmp_path: Path) -> None:
    sandbox_id = kept_sandbox()
    missing_local = cli("cp", str(tmp_path / "nope"), f"{sandbox_id}:x")
    assert missing_local.exit_code == 1 and "nope" in missing_local.stderr
    missing_remote = cli("cp", f"{sandbox_id}:nope", str(tmp_path / "x"))
    assert missing_remote.exit_code == 1
    assert cli("cp", str(tmp_path), "sp-doesnotexist:x").exit_code == 4
    both_remote = sp("cp", f"{sandbox_id}:a", f"{sandbox_id}:b")
    assert both_remote.returncode == 2 and "exactly one" in both_remote.stderr


# -- snapshot, restore --------------------------------------------------------------------------


def test_snapshot_and_restore_round_trip(tmp_path: Path) -> None:
    original = kept_sandbox()
    cli("exec", original, "--", "sh", "-c", "mkdir -p d && echo saved > d/state.txt")
    snap = cli("snapshot", original)
    assert snap.exit_code == 0, snap.stderr
    ref = as_json(snap)
    assert ref["provider"] == "local" and ref["sandbox_id"] == original
    assert as_json(cli("snapshot", "--json", original))["id"] != ref["id"]
    ref_file = tmp_path / "snap.json"
    ref_file.write_text(snap.stdout)

    cli("exec", original, "--", "sh", "-c", "echo changed > d/state.txt")
    restored = cli("restore", str(ref_file))
    assert restored.exit_code == 0, restored.stderr
    new_id = restored.stdout.strip()
    assert new_id != original
    assert cli("exec", new_id, "--", "cat", "d/state.txt").stdout == "saved\n"
    assert cli("exec", original, "--", "cat", "d/state.txt").stdout == "changed\n"

    # From stdin, in a CLI process that then exits, as in real use.
    from_stdin = sp("restore", "--json", "-", input=snap.stdout.encode())
    assert from_stdin.returncode == 0, from_stdin.stderr
    data = as_json(from_stdin)
    assert data["snapshot_id"] == ref["id"] and data["provider"] == "local"
    assert cli("exec", data["sandbox_id"], "--", "cat", "d/state.txt").stdout == "saved\n"

    # Its creator is gone, but a restored sandbox is meant to outlive the CLI: gc keeps it.
    assert as_json(cli("gc", "--json"))["removed"] == []
    assert data["sandbox_id"] in listed_ids()


def test_restore_errors(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.json"
    garbage.write_text("{not json")
    assert cli("restore", str(garbage)).exit_code == 2
    assert cli("restore", str(tmp_path / "missing.json")).exit_code == 2
    gone = tmp_path / "gone.json"
    gone.write_text(json.dumps({"provider": "local", "id": "snap-000000000000"}))
    result = cli("restore", str(gone))
    assert result.exit_code == 4 and "no snapshot" in result.stderr
    assert cli("snapshot", "sp-doesnotexist").exit_code == 4


# -- gc -------------------------------------------------------------------------------------------


def test_gc_removes_orphans_but_not_kept_sandboxes() -> None:
    orphan = orphan_sandbox()
    # Made by a CLI process that has exited, as in real use (in-process, pytest is its creator).
    kept = json.loads(sp("run", "--keep", "--json", "--", "true").stdout)["sandbox_id"]
    assert set(listed_ids()) == {orphan, kept}

    dry = cli("gc", "--dry-run", "--json")
    assert dry.exit_code == 0
    assert as_json(dry) == {"dry_run": True, "removed": [{"provider": "local", "id": orphan}]}
    assert set(listed_ids()) == {orphan, kept}

    assert as_json(cli("gc", "--older-than", "1h", "--json"))["removed"] == []  # too young

    removed = cli("gc", "--json")
    assert removed.exit_code == 0
    assert as_json(removed)["removed"] == [{"provider": "local", "id": orphan}]
    assert listed_ids() == [kept]

    human = cli("gc", "--include-kept")
    assert human.exit_code == 0 and f"removed {kept} (local)" in human.stdout
    assert listed_ids() == []
    assert "Nothing to remove" in cli("gc").stdout


def test_gc_leaves_sandboxes_of_running_programs_alone() -> None:
    proc = spawn_running_command()
    try:
        assert as_json(cli("gc", "--json"))["removed"] == []
        assert len(listed_ids()) == 1
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=SLOW)
    assert listed_ids() == []


# -- shell ----------------------------------------------------------------------------------------


def test_shell_keeps_state_between_lines_and_marks_failures() -> None:
    sandbox_id = kept_sandbox()
    script = "cd /tmp\npwd\nexport GREETING=hello\necho $GREETING\n\nfalse\necho oops >&2\nexit\necho never\n"
    result = cli("shell", sandbox_id, input=script)
    assert result.exit_code == 0, result.stderr
    assert result.stdout == "/tmp\nhello\n"
    assert "[exit 1]" in result.stderr and "oops" in result.stderr
    assert "never" not in result.stdout


def test_shell_json_lines_and_exit_code() -> None:
    sandbox_id = kept_sandbox()
    result = cli("shell", "--json", sandbox_id, input="echo one\nsh -c 'exit 4'\nexit 7\n")
    assert result.exit_code == 7
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(line["command"], line["exit_code"]) for line in lines] == [("echo one", 0), ("sh -c 'exit 4'", 4)]
    assert lines[0]["stdout"] == "one\n"


def test_shell_ctrl_c_interrupts_the_command_and_starts_a_fresh_shell(home: Path) -> None:
    sandbox_id = kept_sandbox()
    marker = home / "local" / "sandboxes" / sandbox_id / "fs" / "work" / "started"
    proc = spawn("shell", sandbox_id, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdin is not None
        proc.stdin.write(b"cd /tmp\ntouch /workspace/started; sleep 60\npwd\n")
        proc.stdin.close()
        proc.stdin = None
        deadline = time.monotonic() + SLOW
        while not marker.exists():  # the long command is running now
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=SLOW)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 0
    assert b"interrupted" in err
    assert out == b"/workspace\n"  # the fresh shell starts in the workdir again


def test_shell_unknown_sandbox_exits_4() -> None:
    assert cli("shell", "sp-doesnotexist", input="true\n").exit_code == 4


# -- providers --------------------------------------------------------------------------------


def test_providers_lists_local_as_usable() -> None:
    result = cli("providers", "--json")
    assert result.exit_code == 0
    data = as_json(result)
    [local] = [p for p in data["providers"] if p["name"] == "local"]
    assert local["usable"] is True
    assert {"streaming", "snapshot", "shell"} <= set(local["capabilities"])
    assert {"name": "docker", "package": "sandport-docker"} in data["not_installed"]
    human = cli("providers")
    assert "local" in human.stdout and "yes" in human.stdout
    assert "pip install sandport-docker" in human.stdout


class _ExplodingCheck(LocalProvider):
    name = "exploding"

    async def check(self) -> Availability:
        raise RuntimeError("engine exploded")


class _Unusable(LocalProvider):
    name = "unusable"

    async def check(self) -> Availability:
        return Availability(usable=False, reason="daemon not running")


def _no_credentials(**settings: Any) -> sandport.Provider:
    raise RuntimeError("no credentials configured")


class _BrokenProviders:
    @sandport.hookimpl
    def sandport_register_providers(self, register: Register) -> None:
        register("exploding", _ExplodingCheck)
        register("unusable", _Unusable)
        register("needs-creds", _no_credentials)


def test_broken_providers_show_as_unusable_without_breaking_listings() -> None:
    plugins.get_plugin_manager().register(_BrokenProviders(), name="test-broken-providers")
    sandbox_id = kept_sandbox()

    result = cli("providers", "--json")
    assert result.exit_code == 0, result.stderr
    status = {p["name"]: p for p in as_json(result)["providers"]}
    assert status["local"]["usable"] is True
    assert status["exploding"]["usable"] is False and "engine exploded" in status["exploding"]["reason"]
    assert status["unusable"] == {**status["unusable"], "usable": False, "reason": "daemon not running"}
    assert status["needs-creds"]["usable"] is False
    assert "no credentials configured" in status["needs-creds"]["reason"]
    assert status["needs-creds"]["capabilities"] == []
    assert "engine exploded" in cli("providers").stdout

    listing = cli("ls", "--json")
    assert listing.exit_code == 0
    assert [item["id"] for item in as_json(listing)] == [sandbox_id]
    for name in ("exploding", "unusable", "needs-creds"):
        assert f"skipping provider '{name}'" in listing.stderr
    assert cli("gc", "--json").exit_code == 0


# -- --json on every command ----------------------------------------------------------------


def test_every_command_has_json_output(tmp_path: Path) -> None:
    sandbox_id = kept_sandbox()
    (tmp_path / "f.txt").write_text("x")
    ref_file = tmp_path / "ref.json"
    outputs: dict[str, Any] = {
        "providers": as_json(cli("providers", "--json")),
        "run": as_json(cli("run", "--json", "--", "true")),
        "exec": as_json(cli("exec", "--json", sandbox_id, "--", "true")),
        "cp": as_json(cli("cp", "--json", str(tmp_path / "f.txt"), f"{sandbox_id}:f.txt")),
        "ls": as_json(cli("ls", "--json")),
        "snapshot": as_json(cli("snapshot", "--json", sandbox_id)),
    }
    ref_file.write_text(json.dumps(outputs["snapshot"]))
    outputs["restore"] = as_json(cli("restore", "--json", str(ref_file)))
    outputs["shell"] = json.loads(cli("shell", "--json", sandbox_id, input="true\n").stdout)
    outputs["gc"] = as_json(cli("gc", "--json"))
    outputs["rm"] = as_json(cli("rm", "--json", sandbox_id, outputs["restore"]["sandbox_id"]))
    assert outputs["rm"]["removed"] == [sandbox_id, outputs["restore"]["sandbox_id"]]
    group = typer.main.get_command(app)
    assert isinstance(group, typer.core.TyperGroup)
    assert set(group.commands) == set(outputs), "a command without a --json check here"
