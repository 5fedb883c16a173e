"""``sandport.open`` in its three forms, and the blocking facade."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

import sandport
from sandport.errors import ProviderNotFound, SandboxGone
from sandport.local import LocalProvider


def test_sync_open_terminates_on_exit_even_after_an_error(tmp_path: Path) -> None:
    provider = LocalProvider(root=tmp_path)
    with pytest.raises(RuntimeError), sandport.open(provider) as sb:
        assert isinstance(sb, sandport.SyncSandbox)
        assert sb.exec(["echo", "hi"]).text == "hi\n"
        kept = sb
        raise RuntimeError("boom")
    with pytest.raises(SandboxGone):
        kept.exec("true")
    assert not any((tmp_path / "sandboxes").iterdir())


def test_async_open_and_await_open(tmp_path: Path) -> None:
    provider = LocalProvider(root=tmp_path)

    async def main() -> None:
        async with sandport.open(provider, env={"X": "1"}) as sb:
            assert (await sb.exec("echo $X")).text == "1\n"
        assert (await sb.info()).state == "terminated"
        sb2 = await sandport.open(provider)
        try:
            assert (await provider.connect(sb2.id)).id == sb2.id  # still running after await
        finally:
            await sb2.terminate()

    anyio.run(main)


def test_open_by_name_with_settings(tmp_path: Path) -> None:
    with sandport.open("local", settings={"root": str(tmp_path)}) as sb:
        assert sb.exec("true").exit_code == 0
        assert (tmp_path / "sandboxes" / sb.id).is_dir()


def test_open_unknown_provider_raises_before_creating_anything() -> None:
    with pytest.raises(ProviderNotFound, match="sandport-daytona"), sandport.open("daytona"):
        pass


def test_sync_process_and_shell(tmp_path: Path) -> None:
    with sandport.open(LocalProvider(root=tmp_path)) as sb:
        proc = sb.start(["sh", "-c", "read line; echo got $line; echo err >&2"])
        proc.write_stdin("ping\n")
        proc.close_stdin()
        chunks = list(proc)
        result = proc.wait()
        assert b"".join(c.data for c in chunks if c.stream == "stdout") == b"got ping\n"
        assert result.stdout == b"got ping\n" and result.stderr == b"err\n"
        with sb.open_shell() as shell:
            shell.run("cd /tmp && export Y=2")
            assert shell.run("pwd; echo $Y").text == "/tmp\n2\n"
