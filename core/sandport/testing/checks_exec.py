"""exec: exit codes, argv fidelity, shell strings, env, cwd, stdin, raw output, caps."""

from __future__ import annotations

import hashlib
import json
import os

import anyio
import pytest

from sandport.capabilities import Capability
from sandport.errors import CommandFailed, CommandTimedOut
from sandport.sandbox import Sandbox
from sandport.testing._support import Sandboxes, py, requires
from sandport.testing.base import ConformanceBase

__all__ = ["ExecChecks"]

ARGV = ["two words", "it's", 'say "hi"', "ünïcödé ✓", "line1\nline2", "$HOME", "${PATH}", "*", "a\\b", "", "-n"]


class ExecChecks(ConformanceBase):
    @pytest.mark.parametrize("code", [0, 1, 42])
    async def test_exit_code(self, sandbox: Sandbox, code: int) -> None:
        result = await sandbox.exec(["sh", "-c", f"exit {code}"])
        assert result.exit_code == code
        assert result.ok is (code == 0)
        assert not result.timed_out

    async def test_stdout_and_stderr_kept_apart(self, sandbox: Sandbox) -> None:
        result = await sandbox.exec("echo to-out; echo to-err >&2; echo more-out")
        assert result.stdout == b"to-out\nmore-out\n"
        assert result.stderr == b"to-err\n"

    async def test_argv_is_never_resplit_or_expanded(self, sandbox: Sandbox) -> None:
        result = await sandbox.exec(py("import json, sys; print(json.dumps(sys.argv[1:]))", *ARGV), check=True)
        assert json.loads(result.stdout) == ARGV

    async def test_string_command_runs_through_sh(self, sandbox: Sandbox) -> None:
        result = await sandbox.exec("printf 'b\\na\\n' | sort | tr a-z A-Z && echo and || echo or; false || echo or2")
        assert result.stdout == b"A\nB\nand\nor2\n"
        assert result.exit_code == 0

    async def test_env_per_call(self, sandbox: Sandbox) -> None:
        value = "value with spaces & $dollar"
        result = await sandbox.exec(["printenv", "SP_CALL"], env={"SP_CALL": value})
        assert result.stdout == value.encode() + b"\n"
        again = await sandbox.exec(["printenv", "SP_CALL"])
        assert again.exit_code == 1, "per-call env must not stick to the sandbox"

    async def test_env_from_spec_and_override(self, sandboxes: Sandboxes) -> None:
        sandbox = await sandboxes.create(env={"SP_A": "from-spec", "SP_B": "spec"})
        result = await sandbox.exec(py("import os; print(os.environ['SP_A'], os.environ['SP_B'])"))
        assert result.stdout == b"from-spec spec\n"
        result = await sandbox.exec(
            py("import os; print(os.environ['SP_A'], os.environ['SP_B'])"), env={"SP_B": "call"}
        )
        assert result.stdout == b"from-spec call\n"

    async def test_secrets_visible_as_env(self, sandboxes: Sandboxes) -> None:
        sandbox = await sandboxes.create(secrets={"SP_TOKEN": "tok-31337-xyz"})
        result = await sandbox.exec(["printenv", "SP_TOKEN"])
        assert result.stdout == b"tok-31337-xyz\n"

    async def test_cwd_relative_and_absolute(self, sandbox: Sandbox) -> None:
        await sandbox.mkdir("sub/dir")
        getcwd = py("import os; print(os.getcwd())")
        assert (await sandbox.exec(getcwd, cwd="sub/dir")).text == f"{sandbox.spec.workdir.rstrip('/')}/sub/dir\n"
        assert (await sandbox.exec(getcwd, cwd="/tmp")).text == "/tmp\n"
        assert (await sandbox.exec(getcwd)).text == sandbox.spec.workdir.rstrip("/") + "\n"

    async def test_missing_cwd_raises(self, sandbox: Sandbox) -> None:
        with pytest.raises(FileNotFoundError, match="no-such-dir"):
            await sandbox.exec(["true"], cwd="no-such-dir")
        await sandbox.write_file("plain.txt", "x")
        with pytest.raises(NotADirectoryError, match=r"plain\.txt"):
            await sandbox.exec(["true"], cwd="plain.txt")

    @requires(Capability.STDIN)
    async def test_stdin_bytes_and_str(self, sandbox: Sandbox) -> None:
        assert (await sandbox.exec(["cat"], stdin=b"raw\x00\xffbytes")).stdout == b"raw\x00\xffbytes"
        assert (await sandbox.exec(["cat"], stdin="héllo\n")).stdout == "héllo\n".encode()

    @requires(Capability.STDIN)
    async def test_large_stdin(self, sandbox: Sandbox) -> None:
        data = os.urandom(6 * 1024 * 1024)
        digest = py("import hashlib, sys; d = sys.stdin.buffer.read(); print(len(d), hashlib.sha256(d).hexdigest())")
        result = await sandbox.exec(digest, stdin=data, timeout=120)
        assert result.text.split() == [str(len(data)), hashlib.sha256(data).hexdigest()]

    @requires(Capability.STDIN)
    async def test_large_stdin_echoed_back(self, sandbox: Sandbox) -> None:
        """Feeding stdin and reading stdout must happen at once, or a pipe fills and hangs."""
        data = os.urandom(6 * 1024 * 1024)
        result = await sandbox.exec(["cat"], stdin=data, timeout=120)
        assert not result.timed_out
        assert result.stdout == data

    @requires(Capability.STDIN)
    async def test_unread_stdin_is_not_an_error(self, sandbox: Sandbox) -> None:
        result = await sandbox.exec(["sh", "-c", "echo done"], stdin=os.urandom(8 * 1024 * 1024), timeout=60)
        assert (result.exit_code, result.stdout, result.timed_out) == (0, b"done\n", False)

    async def test_no_stdin_reads_eof(self, sandbox: Sandbox) -> None:
        result = await sandbox.exec(["cat"], timeout=20)
        assert not result.timed_out, "a command without stdin must read EOF at once"
        assert result.exit_code == 0
        assert result.stdout == b""

    async def test_binary_output_byte_exact(self, sandbox: Sandbox) -> None:
        code = (
            "import sys; sys.stdout.buffer.write(bytes(range(256))); sys.stderr.buffer.write(bytes(range(255, -1, -1)))"
        )
        result = await sandbox.exec(py(code))
        assert result.stdout == bytes(range(256))
        assert result.stderr == bytes(range(255, -1, -1))

    async def test_non_utf8_output(self, sandbox: Sandbox) -> None:
        result = await sandbox.exec(py(r"import sys; sys.stdout.buffer.write(b'ok\xff\xfe\x80end')"))
        assert result.stdout == b"ok\xff\xfe\x80end"
        assert result.text.startswith("ok") and result.text.endswith("end") and "\ufffd" in result.text

    async def test_large_output_intact(self, sandbox: Sandbox) -> None:
        code = """
            import hashlib, os, sys
            data = os.urandom(8 * 1024 * 1024)
            sys.stdout.buffer.write(data)
            sys.stderr.write(hashlib.sha256(data).hexdigest())
            """
        result = await sandbox.exec(py(code), timeout=120)
        assert len(result.stdout) == 8 * 1024 * 1024
        assert hashlib.sha256(result.stdout).hexdigest() == result.stderr.decode()
        assert not result.truncated

    async def test_output_cap(self, sandboxes: Sandboxes) -> None:
        sandbox = await sandboxes.create(max_output_bytes=1024)
        code = "import sys; sys.stdout.buffer.write(bytes(range(256)) * 40); sys.stderr.write('small')"
        result = await sandbox.exec(py(code))
        assert result.truncated
        assert result.stdout == (bytes(range(256)) * 4)[:1024]
        assert result.stderr == b"small"
        flipped = await sandbox.exec(py("import sys; sys.stderr.write('e' * 3000); sys.stdout.write('tiny')"))
        assert (flipped.stdout, flipped.stderr, flipped.truncated) == (b"tiny", b"e" * 1024, True)
        exact = await sandbox.exec(py("import sys; sys.stdout.write('x' * 1024)"))
        assert exact.stdout == b"x" * 1024
        assert not exact.truncated, "output of exactly the cap is not truncated"

    async def test_missing_program_is_exit_127(self, sandbox: Sandbox) -> None:
        assert (await sandbox.exec(["sandport-no-such-program"])).exit_code == 127
        assert (await sandbox.exec("sandport-no-such-program --flag")).exit_code == 127
        assert (await sandbox.exec(["/nonexistent/dir/prog"])).exit_code == 127

    async def test_non_executable_is_exit_126(self, sandbox: Sandbox) -> None:
        await sandbox.write_file("script.sh", "#!/bin/sh\necho ran\n", mode=0o644)
        result = await sandbox.exec(["./script.sh"])
        assert result.exit_code == 126
        assert b"ran" not in result.stdout

    async def test_killed_by_signal_is_128_plus_n(self, sandbox: Sandbox) -> None:
        assert (await sandbox.exec(["sh", "-c", "kill -9 $$"])).exit_code == 128 + 9

    async def test_check_raises(self, sandbox: Sandbox) -> None:
        with pytest.raises(CommandFailed) as failed:
            await sandbox.exec("echo why >&2; exit 3", check=True)
        assert not isinstance(failed.value, CommandTimedOut)
        assert failed.value.result.exit_code == 3
        assert "why" in str(failed.value)
        with pytest.raises(CommandTimedOut) as timed:
            await sandbox.exec(["sleep", "30"], timeout=0.5, check=True)
        assert timed.value.result.timed_out
        assert (await sandbox.exec(["true"], check=True)).exit_code == 0

    @pytest.mark.parametrize("cmd", ["", "   ", []], ids=["empty-string", "blank-string", "empty-argv"])
    async def test_empty_command_is_value_error(self, sandbox: Sandbox, cmd: str | list[str]) -> None:
        with pytest.raises(ValueError, match="empty"):
            await sandbox.exec(cmd)
        with pytest.raises(ValueError):
            await sandbox.exec(["echo", "nul\0byte"])

    async def test_invalid_env_name_is_value_error(self, sandbox: Sandbox) -> None:
        for name in ("A=B", "", "NUL\0"):
            with pytest.raises(ValueError):
                await sandbox.exec(["true"], env={name: "x"})

    async def test_concurrent_execs(self, sandbox: Sandbox) -> None:
        results: dict[int, bytes] = {}

        async def run(i: int) -> None:
            results[i] = (await sandbox.exec(["sh", "-c", f"sleep 0.2; echo {i}; echo e{i} >&2"])).stdout

        async with anyio.create_task_group() as tg:
            for i in range(8):
                tg.start_soon(run, i)
        assert results == {i: f"{i}\n".encode() for i in range(8)}
