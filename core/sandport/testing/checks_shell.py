"""open_shell(): state that persists between commands, framing, restarts."""

from __future__ import annotations

import pytest

from sandport.capabilities import Capability
from sandport.errors import SandboxGone
from sandport.sandbox import Sandbox
from sandport.testing._support import Sandboxes, requires
from sandport.testing.base import ConformanceBase

__all__ = ["ShellChecks"]


class ShellChecks(ConformanceBase):
    @requires(Capability.SHELL)
    async def test_shell_cd_persists(self, sandbox: Sandbox) -> None:
        await sandbox.mkdir("deep/er")
        async with await sandbox.open_shell() as shell:
            assert (await shell.run("cd deep/er")).exit_code == 0
            assert (await shell.run("pwd")).stdout == f"{sandbox.spec.workdir.rstrip('/')}/deep/er\n".encode()

    @requires(Capability.SHELL)
    async def test_shell_export_persists(self, sandboxes: Sandboxes) -> None:
        sandbox = await sandboxes.create(env={"SP_SPEC": "from-spec"})
        async with await sandbox.open_shell() as shell:
            await shell.run("export SP_SHELL_VAR='kept value'; SP_PLAIN=also")
            result = await shell.run('echo "$SP_SHELL_VAR|$SP_PLAIN|$SP_SPEC"')
            assert result.stdout == b"kept value|also|from-spec\n"

    @requires(Capability.SHELL)
    async def test_shell_background_job_persists(self, sandbox: Sandbox) -> None:
        async with await sandbox.open_shell() as shell:
            assert (await shell.run("sleep 300 &")).exit_code == 0
            jobs = await shell.run("jobs")
            assert b"sleep 300" in jobs.stdout
            assert (await shell.run("kill %1; wait %1; echo waited")).stdout.endswith(b"waited\n")
            assert b"sleep" not in (await shell.run("jobs")).stdout

    @requires(Capability.SHELL)
    async def test_shell_exit_codes_per_command(self, sandbox: Sandbox) -> None:
        async with await sandbox.open_shell() as shell:
            assert (await shell.run("false")).exit_code == 1
            assert (await shell.run("true")).exit_code == 0
            assert (await shell.run("(exit 42)")).exit_code == 42
            assert (await shell.run("sandport-no-such-program")).exit_code == 127

    @requires(Capability.SHELL)
    async def test_shell_stdout_stderr_separate_and_exact(self, sandbox: Sandbox) -> None:
        async with await sandbox.open_shell() as shell:
            result = await shell.run("echo out; echo err >&2; printf 'no-newline'")
            assert result.stdout == b"out\nno-newline"
            assert result.stderr == b"err\n"
            assert (await shell.run("printf 'a\\n\\n'")).stdout == b"a\n\n"
            assert (await shell.run("printf ''")).stdout == b""
            assert (await shell.run('echo "it\'s" \'$HOME\' "a  b"')).stdout == b"it's $HOME a  b\n"

    @requires(Capability.SHELL)
    async def test_shell_exit_restarts(self, sandbox: Sandbox) -> None:
        async with await sandbox.open_shell() as shell:
            await shell.run("cd /tmp")
            result = await shell.run("echo bye; exit 3")
            assert result.restarted
            assert result.exit_code == 3
            assert result.stdout == b"bye\n"
            after = await shell.run("echo back; pwd")
            assert after.exit_code == 0 and not after.restarted
            assert after.stdout == f"back\n{sandbox.spec.workdir.rstrip('/')}\n".encode()

    @requires(Capability.SHELL)
    async def test_shell_timeout_restarts(self, sandbox: Sandbox) -> None:
        async with await sandbox.open_shell() as shell:
            result = await shell.run("echo partial; sleep 120", timeout=2.5)
            assert result.timed_out
            assert result.exit_code == 124
            assert result.restarted or result.interrupted
            assert result.stdout == b"partial\n"
            after = await shell.run("echo fine")
            assert after.stdout == b"fine\n" and after.exit_code == 0

    @requires(Capability.SHELL)
    async def test_shell_multiline_command(self, sandbox: Sandbox) -> None:
        async with await sandbox.open_shell() as shell:
            script = (
                "total=0\nfor i in 1 2 3; do\n  total=$((total + i))\ndone\nif [ $total -eq 6 ]; then\n  echo six\nfi"
            )
            assert (await shell.run(script)).stdout == b"six\n"
            assert (await shell.run("echo $total")).stdout == b"6\n"

    @requires(Capability.SHELL)
    async def test_shell_command_reads_eof(self, sandbox: Sandbox) -> None:
        async with await sandbox.open_shell() as shell:
            result = await shell.run("cat; echo after-cat", timeout=self.slack)
            assert not result.timed_out
            assert result.stdout == b"after-cat\n"
            assert (await shell.run("echo still-here")).stdout == b"still-here\n"

    @requires(Capability.SHELL)
    async def test_shell_large_output(self, sandbox: Sandbox) -> None:
        async with await sandbox.open_shell() as shell:
            result = await shell.run("python3 -c \"import sys; sys.stdout.write('0123456789' * 200000)\"")
            assert result.stdout == b"0123456789" * 200000
            assert (await shell.run("echo next")).stdout == b"next\n"

    @requires(Capability.SHELL)
    async def test_shell_after_terminate_raises_gone(self, sandbox: Sandbox) -> None:
        shell = await sandbox.open_shell()
        assert (await shell.run("echo up")).stdout == b"up\n"
        await sandbox.terminate()
        with pytest.raises(SandboxGone):
            await shell.run("echo down")
        await shell.close()
