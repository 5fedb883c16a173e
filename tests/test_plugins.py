"""The plugin manager: entry points, the SANDPORT_PLUGINS filter, broken plugins, hooks."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

import sandport
from sandport import hookspecs, plugins
from sandport.errors import ProviderNotFound
from sandport.local import LocalProvider


def _install_plugin(site: Path, dist: str, ep_name: str, module: str, source: str) -> None:
    """Make an installed distribution with one ``sandport`` entry point, as pip would."""
    info = site / f"{dist}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[sandport]\n{ep_name} = {module}\n")
    (site / f"{module}.py").write_text(textwrap.dedent(source))


GOOD = """
    import sandport
    from sandport.local import LocalProvider

    class FakeProvider(LocalProvider):
        name = "fake"

    @sandport.hookimpl
    def sandport_register_providers(register):
        register("fake", FakeProvider, aliases=("fake-alias",))
"""


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv("SANDPORT_PLUGINS", raising=False)
    plugins.reset()
    yield tmp_path
    plugins.reset()


def test_entry_point_plugin_registers_provider_and_alias(site: Path) -> None:
    _install_plugin(site, "sandport_fake", "fake", "sandport_fake_good", GOOD)
    assert {"fake", "fake-alias", "local"} <= set(sandport.providers())
    provider = sandport.get_provider("fake-alias", root=str(site / "root"))
    assert isinstance(provider, LocalProvider) and provider.name == "fake"


def test_sandport_plugins_env_restricts_entry_points(site: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _install_plugin(site, "sandport_fake", "fake", "sandport_fake_good", GOOD)
    monkeypatch.setenv("SANDPORT_PLUGINS", "something-else")
    assert "fake" not in sandport.providers()
    assert "local" in sandport.providers()  # default plugins always load
    plugins.reset()
    monkeypatch.setenv("SANDPORT_PLUGINS", "fake")
    assert "fake" in sandport.providers()


def test_broken_plugin_is_warned_about_and_skipped(site: Path) -> None:
    _install_plugin(site, "sandport_broken", "broken", "sandport_broken_mod", "raise ImportError('boom')\n")
    _install_plugin(site, "sandport_fake", "fake", "sandport_fake_good", GOOD)
    with pytest.warns(plugins.PluginWarning, match="broken.*boom"):
        names = sandport.providers()
    assert "fake" in names and "local" in names


def test_plugin_failing_in_register_is_skipped(site: Path) -> None:
    source = """
        import sandport

        @sandport.hookimpl
        def sandport_register_providers(register):
            raise RuntimeError("cannot register")
    """
    _install_plugin(site, "sandport_bad", "bad", "sandport_bad_register", source)
    with pytest.warns(plugins.PluginWarning, match="cannot register"):
        assert "local" in sandport.providers()


def test_duplicate_provider_name_is_refused(site: Path) -> None:
    source = """
        import sandport
        from sandport.local import LocalProvider

        @sandport.hookimpl
        def sandport_register_providers(register):
            register("local", LocalProvider)
    """
    _install_plugin(site, "sandport_dup", "dup", "sandport_dup_mod", source)
    with pytest.warns(plugins.PluginWarning, match="already registered"):
        names = sandport.providers()
    assert names.count("local") == 1


def test_unknown_known_provider_names_package(site: Path) -> None:
    with pytest.raises(ProviderNotFound) as err:
        sandport.get_provider("modal")
    message = str(err.value)
    assert "pip install sandport-modal" in message and "local" in message


def test_unknown_provider_lists_installed(site: Path) -> None:
    with pytest.raises(ProviderNotFound, match=r"No sandport provider named 'nope'.*Installed providers: .*local"):
        sandport.get_provider("nope")


def test_every_hookspec_is_documented() -> None:
    specs = [name for name in dir(hookspecs) if name.startswith("sandport_")]
    assert sorted(specs) == ["sandport_audit", "sandport_check_policy", "sandport_register_providers"]
    for name in specs:
        doc = getattr(hookspecs, name).__doc__ or ""
        assert ":param" in doc, f"{name} documents its parameters"
