"""What the local provider's bwrap confinement hides, and how it behaves without bwrap."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

import sandport
from sandport.errors import ProviderUnavailable
from sandport.local import LocalProvider
from sandport.local import isolation as isolation_module
from sandport.local import provider as provider_module


@pytest.fixture
def provider(tmp_path: Path) -> Iterator[sandport.SyncProvider]:
    sync = sandport.SyncProvider(LocalProvider(root=tmp_path / "root"))
    yield sync
    sync.close()


def test_bwrap_sandbox_hides_home_host_tmp_and_other_sandboxes(provider: sandport.SyncProvider, tmp_path: Path) -> None:
    canary = tmp_path / "host-canary.txt"
    canary.write_text("host secret")
    with provider.create() as other, provider.create() as sb:
        other.write_file("mine.txt", "other sandbox")
        assert sb.info().isolation == "bwrap"
        assert sb.exec(["ls", str(tmp_path)]).exit_code != 0  # the host's /tmp is not there
        assert sb.exec(["cat", str(canary)]).exit_code != 0
        assert sb.exec(["ls", "/root"]).exit_code != 0  # nor the user's home
        assert sb.exec(["ls", "-A", "/tmp"]).text == ""  # a private, empty /tmp
        assert sb.exec("echo $HOME").text == "/workspace\n"
        assert other.id not in sb.exec("find / -xdev 2>/dev/null | head -5000").text


def test_bwrap_sandbox_has_its_own_pid_uts_and_net_namespaces(provider: sandport.SyncProvider) -> None:
    with provider.create() as sb:
        result = sb.exec("hostname; ls /proc | grep -c '^[0-9]'; cat /proc/net/dev | grep -c ':'")
        hostname, processes, interfaces = result.text.split()
        assert hostname == "sandbox"
        assert int(processes) < 10  # only this command's own processes, not the host's
        assert interfaces == "1"  # loopback only
        assert sb.exec("touch /usr/x").exit_code != 0  # system dirs are read-only
        assert sb.exec("cat /etc/shadow").exit_code != 0


def test_open_network_shares_host_network(provider: sandport.SyncProvider) -> None:
    with provider.create(network="open") as sb:
        count = sb.exec("cat /proc/net/dev | grep -c ':'").text.strip()
        assert int(count) == sum(1 for line in Path("/proc/net/dev").read_text().splitlines() if ":" in line)


def _fake_bwrap_path(monkeypatch: pytest.MonkeyPatch, directory: Path, script: str | None) -> None:
    """Put ``directory`` (holding a ``bwrap`` shell script, or nothing) first on PATH and
    forget what this process knew about bwrap."""
    directory.mkdir()
    if script is not None:
        fake = directory / "bwrap"
        fake.write_text(script)
        fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(directory) if script is None else f"{directory}:/usr/bin:/bin")
    monkeypatch.setattr(isolation_module, "_bwrap_ok", False)
    isolation_module._bwrap_binary.cache_clear()


@pytest.fixture
def no_bwrap(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """Make this process believe bwrap is not installed."""
    _fake_bwrap_path(monkeypatch, tmp_path / "empty-bin", None)
    monkeypatch.setattr(provider_module, "_warned_unconfined", False)
    yield
    monkeypatch.undo()
    isolation_module._bwrap_binary.cache_clear()


def test_without_bwrap_an_isolated_spec_fails_with_the_fix(no_bwrap: None, tmp_path: Path) -> None:
    provider = sandport.SyncProvider(LocalProvider(root=tmp_path / "root"))
    try:
        assert not provider.check().usable
        with pytest.raises(ProviderUnavailable, match="apt-get install -y bubblewrap"):
            provider.create()  # network "none" by default needs isolation
        with pytest.raises(ProviderUnavailable, match="bubblewrap"):
            provider.create(network="open", options={"isolation": "bwrap"})
        assert provider.list() == []
        assert not any((tmp_path / "root").rglob("meta.json"))
    finally:
        provider.close()


def test_without_bwrap_open_network_is_refused_not_run_unconfined(no_bwrap: None, tmp_path: Path) -> None:
    """The attack of issue 12 item 3: a failing bwrap check must never turn into a sandbox
    with isolation 'none' (and a host secret read through it)."""
    provider = sandport.SyncProvider(LocalProvider(root=tmp_path / "root"))
    try:
        with pytest.raises(ProviderUnavailable, match="bubblewrap"):
            provider.create(network="open")
        assert provider.list() == []
    finally:
        provider.close()


def test_explicit_opt_out_runs_unconfined_and_says_so(no_bwrap: None, tmp_path: Path) -> None:
    provider = sandport.SyncProvider(LocalProvider(root=tmp_path / "root"))
    try:
        with pytest.warns(UserWarning, match="UNCONFINED"):
            sb = provider.create(network="open", options={"isolation": "none"})
        with sb:
            assert sb.info().isolation == "none"
            sb.write_file("x.txt", "data")
            assert sb.exec(["cat", "x.txt"]).text == "data"
            assert sb.exec(["no-such-program"]).exit_code == 127
    finally:
        provider.close()


def test_a_flaky_bwrap_probe_is_retried_once(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """bwrap that fails its first run (as it can while Docker remounts resolv.conf) is
    probed again, and a bwrap that keeps failing is reported, never skipped."""
    real = shutil.which("bwrap")
    assert real is not None
    marker = tmp_path / "failed-once"
    _fake_bwrap_path(
        monkeypatch,
        tmp_path / "bin",
        f"""#!/bin/sh
if [ ! -e {marker} ]; then : > {marker}; echo "bwrap: Can't mount resolv.conf" >&2; exit 1; fi
exec {real} "$@"
""",
    )
    (tmp_path / "bin").chmod(0o755)
    marker.parent.chmod(0o777)  # the probe runs as the sandbox user when the tests run as root
    assert isolation_module.bwrap_problem() is None
    assert marker.exists()

    _fake_bwrap_path(monkeypatch, tmp_path / "broken", "#!/bin/sh\necho 'bwrap: nope' >&2\nexit 1\n")
    problem = isolation_module.bwrap_problem()
    assert problem is not None and "bwrap: nope" in problem
    monkeypatch.undo()
    isolation_module._bwrap_binary.cache_clear()


def test_explicit_opt_out_still_refuses_network_none(tmp_path: Path) -> None:
    provider = sandport.SyncProvider(LocalProvider(root=tmp_path / "root"))
    try:
        with pytest.raises(ProviderUnavailable, match="network mode 'none' cannot be enforced with isolation='none'"):
            provider.create(options={"isolation": "none"})
    finally:
        provider.close()
