"""What the local provider's bwrap confinement hides, and how it behaves without bwrap."""

from __future__ import annotations

import os
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


@pytest.fixture
def no_bwrap(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """Make this process believe bwrap is not installed."""
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", f"{empty}:/nonexistent")
    isolation_module.bwrap_problem.cache_clear()
    isolation_module._bwrap_binary.cache_clear()
    monkeypatch.setattr(provider_module, "_warned_unconfined", False)
    yield
    monkeypatch.undo()
    isolation_module.bwrap_problem.cache_clear()
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


def test_without_bwrap_open_network_runs_unconfined_and_says_so(no_bwrap: None, tmp_path: Path) -> None:
    provider = sandport.SyncProvider(LocalProvider(root=tmp_path / "root"))
    try:
        with pytest.warns(UserWarning, match="UNCONFINED"):
            sb = provider.create(network="open")
        with sb:
            assert sb.info().isolation == "none"
            os.environ["PATH"] = "/usr/bin:/bin"  # the command needs a shell to run
            sb.write_file("x.txt", "data")
            assert sb.exec(["cat", "x.txt"]).text == "data"
            assert sb.exec(["no-such-program"]).exit_code == 127
    finally:
        provider.close()


def test_explicit_opt_out_still_refuses_network_none(tmp_path: Path) -> None:
    provider = sandport.SyncProvider(LocalProvider(root=tmp_path / "root"))
    try:
        with pytest.raises(ProviderUnavailable, match="network mode 'none' needs isolation"):
            provider.create(options={"isolation": "none"})
    finally:
        provider.close()
