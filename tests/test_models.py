"""Spec validation: bad input names the field and creates nothing."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

import sandport
from sandport.local import LocalProvider
from sandport.models import ExecResult, NetworkPolicy, SandboxSpec, SnapshotRef


@pytest.mark.parametrize(
    ("fields", "names"),
    [
        ({"imgae": "x"}, "imgae"),
        ({"resources": {"memory_mb": -1}}, "resources.memory_mb"),
        ({"network": "sometimes"}, "network"),
        ({"network": {"mode": "allowlist"}}, "network"),
        ({"workdir": "relative"}, "workdir"),
        ({"ports": [70000]}, "ports"),
        ({"env": {"A=B": "c"}}, "env"),
        ({"max_output_bytes": 0}, "max_output_bytes"),
    ],
)
def test_invalid_spec_names_the_field(fields: dict[str, object], names: str) -> None:
    with pytest.raises(ValidationError) as err:
        SandboxSpec.model_validate(fields)
    assert names in str(err.value)


def test_invalid_spec_leaves_no_sandbox_or_directory(tmp_path: Path) -> None:
    provider = sandport.SyncProvider(LocalProvider(root=tmp_path / "root"))
    try:
        with pytest.raises(ValidationError, match="memory_mb"):
            provider.create(resources={"memory_mb": -5})
        with pytest.raises(ValidationError, match="isolation"):
            provider.create(options={"isolation": "maybe"})
        assert provider.list() == []
        assert not (tmp_path / "root" / "sandboxes").exists() or not any((tmp_path / "root" / "sandboxes").iterdir())
    finally:
        provider.close()


def test_network_shorthand_and_secret_repr() -> None:
    spec = SandboxSpec(network="open", secrets={"TOKEN": "hunter2"})
    assert spec.network == NetworkPolicy(mode="open")
    assert "hunter2" not in repr(spec) and "hunter2" not in spec.model_dump_json()
    assert spec.secret_env() == {"TOKEN": "hunter2"}


def test_exec_result_text_helpers_replace_bad_utf8() -> None:
    result = ExecResult(exit_code=0, stdout=b"ok \xff", stderr=b"err")
    assert result.text == "ok \ufffd" and result.stderr_text == "err" and result.ok
    assert not ExecResult(exit_code=0, timed_out=True).ok


def test_snapshot_ref_round_trips_through_json() -> None:
    ref = SnapshotRef(provider="local", id="snap-1", sandbox_id="sp-1", metadata={"k": [1, 2]})
    assert SnapshotRef.model_validate_json(ref.model_dump_json()) == ref
