"""``sandport shell``: a line-by-line session on a persistent shell in a sandbox.

Lines are read in the main thread (so Ctrl-C and line editing behave as in any prompt)
and run through an anyio blocking portal on ``Sandbox.open_shell()``. Ctrl-C at the prompt
clears the line; Ctrl-C during a command interrupts it and starts a fresh shell (the
generic shell cannot stop one command alone).
"""

from __future__ import annotations

import concurrent.futures
import functools
import json
import re
import sys
from typing import TextIO

from anyio.from_thread import BlockingPortal, start_blocking_portal
from rich.text import Text

import sandport
from sandport.cli.output import exec_result_json, note, stderr_console, write_output
from sandport.models import ShellResult
from sandport.sandbox import Sandbox
from sandport.shell import Shell

__all__ = ["run_shell"]

_EXIT = re.compile(r"^\s*(?:exit|logout)(?:\s+(\d+))?\s*$")


def _read_line(prompt: str, interactive: bool, stdin: TextIO) -> str | None:
    """The next line, or None at EOF."""
    if interactive:
        try:
            return input(prompt)
        except EOFError:
            sys.stderr.write("\n")
            return None
    line = stdin.readline()
    return None if line == "" else line.rstrip("\n")


def _render(result: ShellResult, *, interactive: bool, timeout: float | None) -> None:
    if result.stdout:
        write_output("stdout", result.stdout)
        if interactive and not result.stdout.endswith(b"\n"):
            write_output("stdout", b"\n")
    if result.stderr:
        write_output("stderr", result.stderr)
        if interactive and not result.stderr.endswith(b"\n"):
            write_output("stderr", b"\n")
    console = stderr_console()
    if result.timed_out:
        console.print(
            Text(
                f"[timed out after {timeout:g}s; the shell was restarted: cwd, env and jobs were lost]",
                style="bold red",
            )
        )
    elif result.exit_code != 0:
        console.print(Text(f"[exit {result.exit_code}]", style="bold red"))
    if result.restarted and not result.timed_out:
        console.print(Text("[the shell exited and was restarted: cwd, env and jobs were lost]", style="yellow"))


class _Session:
    def __init__(self, portal: BlockingPortal, sandbox: Sandbox) -> None:
        self.portal = portal
        self.sandbox = sandbox
        self.shell: Shell = portal.call(sandbox.open_shell)

    def run(self, line: str, timeout: float | None) -> ShellResult | None:
        """Run one line; None if Ctrl-C interrupted it (the shell is then replaced)."""
        future = self.portal.start_task_soon(functools.partial(self.shell.run, line, timeout=timeout))
        try:
            return future.result()
        except KeyboardInterrupt:
            future.cancel()
            concurrent.futures.wait([future], timeout=10)
            self.restart()
            return None

    def restart(self) -> None:
        self.close()
        self.shell = self.portal.call(self.sandbox.open_shell)

    def close(self) -> None:
        try:
            self.portal.call(self.shell.close)
        except Exception:  # the sandbox may be gone; nothing left to close
            pass


def run_shell(provider_name: str, sandbox_id: str, *, timeout: float | None, as_json: bool) -> int:
    """The session loop; returns the exit code (0, or N for ``exit N``)."""
    provider = sandport.get_provider(provider_name)
    stdin = sys.stdin
    interactive = stdin is not None and stdin.isatty()
    if interactive:
        try:
            import readline  # noqa: F401 - line editing and history for input()
        except ImportError:
            pass
        note(f"shell in {sandbox_id} ({provider.name}); `exit` or Ctrl-D to leave")
    with start_blocking_portal() as portal:
        try:
            session = _Session(portal, portal.call(provider.connect, sandbox_id))
            try:
                return _loop(session, sandbox_id, interactive=interactive, timeout=timeout, as_json=as_json)
            finally:
                session.close()
        finally:
            portal.call(provider.aclose)


def _loop(session: _Session, sandbox_id: str, *, interactive: bool, timeout: float | None, as_json: bool) -> int:
    prompt = f"{sandbox_id}$ "
    while True:
        try:
            line = _read_line(prompt, interactive, sys.stdin)
        except KeyboardInterrupt:
            sys.stderr.write("^C\n")
            continue
        if line is None:
            return 0
        if not line.strip():
            continue
        if match := _EXIT.match(line):
            return int(match.group(1) or 0)
        result = session.run(line, timeout)
        if result is None:
            note("interrupted; started a fresh shell (cwd, env and background jobs were lost)")
            if as_json:
                sys.stdout.write(json.dumps({"command": line, "interrupted": True}) + "\n")
            continue
        if as_json:
            sys.stdout.write(json.dumps(exec_result_json(result, command=line), ensure_ascii=False) + "\n")
            sys.stdout.flush()
        else:
            _render(result, interactive=interactive, timeout=timeout)
