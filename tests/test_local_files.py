"""Local transfers stream: the read cap guards read_file, not upload/download."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

import sandport
from sandport.errors import FileTooLarge
from sandport.local import LocalProvider


def test_download_and_upload_stream_past_the_read_cap(tmp_path: Path) -> None:
    payload = bytes(range(256)) * 8192  # 2 MiB, far over the 1 KiB cap
    source = tmp_path / "in" / "big.bin"
    source.parent.mkdir()
    source.write_bytes(payload)
    source.chmod(0o640)
    with sandport.open(LocalProvider(root=tmp_path / "root"), max_file_bytes=1024) as sb:
        sb.upload(source.parent, "data")
        with pytest.raises(FileTooLarge, match="download"):
            sb.read_file("data/big.bin")
        assert sb.exec("sha256sum data/big.bin").text.split()[0] == hashlib.sha256(payload).hexdigest()
        sb.download("data", tmp_path / "out")
    copied = tmp_path / "out" / "big.bin"
    assert copied.read_bytes() == payload
    assert copied.stat().st_mode & 0o777 == 0o640


def test_restore_adds_label_overrides_to_the_snapshot_labels(tmp_path: Path) -> None:
    provider = sandport.SyncProvider(LocalProvider(root=tmp_path / "root"))
    try:
        with provider.create(labels={"team": "a"}) as sb:
            ref = sb.snapshot()
        with provider.restore(ref, labels={"extra": "1"}) as restored:
            labels = restored.info().labels
            assert labels["team"] == "a" and labels["extra"] == "1"
            assert labels["sandport.creator"] != ""  # fresh bookkeeping labels
        provider.delete_snapshot(ref)
    finally:
        provider.close()
