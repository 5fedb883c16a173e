"""snapshot()/restore(): equal contents, independent copies, serialisable refs."""

from __future__ import annotations

import pytest

from sandport.capabilities import Capability
from sandport.errors import CapabilityNotSupported, SandboxNotFound
from sandport.models import SnapshotRef
from sandport.provider import Provider
from sandport.sandbox import Sandbox
from sandport.testing._support import Sandboxes, requires
from sandport.testing.base import ConformanceBase

__all__ = ["SnapshotChecks"]


async def fill(sandbox: Sandbox) -> None:
    await sandbox.write_file("snap/data.bin", bytes(range(256)) * 100)
    await sandbox.write_file("snap/tool.sh", "#!/bin/sh\necho tool\n", mode=0o755)
    await sandbox.exec(
        "mkdir -p -m 755 snap/empty && ln -s data.bin snap/link && ln -s /etc/passwd snap/abs", check=True
    )
    await sandbox.exec(
        "umask 0; echo shared > snap/shared && chmod 666 snap/shared && mkdir -m 775 snap/team", check=True
    )
    await sandbox.write_file("/tmp/in-tmp.txt", "tmp")


MODES = ["stat", "-c", "%a %n", "snap/data.bin", "snap/tool.sh", "snap/shared", "snap/team", "snap/empty", "/tmp"]


async def assert_filled(sandbox: Sandbox) -> None:
    assert (await sandbox.exec(MODES)).text.split("\n")[:-1] == [
        "644 snap/data.bin", "755 snap/tool.sh", "666 snap/shared",
        "775 snap/team", "755 snap/empty", "1777 /tmp",
    ]  # fmt: skip
    assert (await sandbox.exec(["readlink", "snap/abs"])).stdout == b"/etc/passwd\n"
    assert await sandbox.read_file("/tmp/in-tmp.txt") == b"tmp"
    assert await sandbox.read_file("snap/data.bin") == bytes(range(256)) * 100
    assert (await sandbox.exec(["./snap/tool.sh"])).stdout == b"tool\n"
    assert (await sandbox.stat("snap/empty")).is_dir
    assert {e.name: e.type for e in await sandbox.list_dir("snap")}["link"] == "symlink"


class SnapshotChecks(ConformanceBase):
    @requires(Capability.SNAPSHOT)
    async def test_snapshot_restore_contents(self, sandbox: Sandbox, sandboxes: Sandboxes) -> None:
        await fill(sandbox)
        await assert_filled(sandbox)  # the original itself, so the check cannot pass for a wrong reason
        ref = await sandboxes.snapshot(sandbox)
        assert ref.provider == sandbox.provider.name
        restored = await sandboxes.restore(ref)
        assert restored.id != sandbox.id
        await assert_filled(restored)

    @requires(Capability.SNAPSHOT)
    async def test_restored_copy_is_independent(self, sandbox: Sandbox, sandboxes: Sandboxes) -> None:
        await sandbox.write_file("shared.txt", "v1")
        ref = await sandboxes.snapshot(sandbox)
        restored = await sandboxes.restore(ref)
        await restored.write_file("shared.txt", "changed in restored")
        await restored.write_file("only-restored.txt", "r")
        await sandbox.write_file("only-original.txt", "o")
        assert await sandbox.read_file("shared.txt") == b"v1"
        assert not await sandbox.exists("only-restored.txt")
        assert not await restored.exists("only-original.txt")
        again = await sandboxes.restore(ref)
        assert await again.read_file("shared.txt") == b"v1", "restoring must not be affected by a restored copy"

    @requires(Capability.SNAPSHOT)
    async def test_snapshot_ref_json_round_trip(self, sandbox: Sandbox, sandboxes: Sandboxes) -> None:
        await fill(sandbox)
        ref = await sandboxes.snapshot(sandbox)
        text = ref.model_dump_json()
        await sandbox.terminate()  # a snapshot outlives its sandbox
        later = self.make_provider()  # as a later process would
        try:
            restored = await sandboxes.restore(SnapshotRef.model_validate_json(text), provider=later)
            await assert_filled(restored)
            await restored.terminate()
        finally:
            await later.aclose()

    @requires(Capability.SNAPSHOT)
    async def test_restore_with_overrides(self, sandbox: Sandbox, sandboxes: Sandboxes) -> None:
        await sandbox.write_file("kept.txt", "k")
        ref = await sandboxes.snapshot(sandbox)
        restored = await sandboxes.restore(ref, env={"SP_RESTORED": "yes"}, labels={"sp-restored": "1"})
        assert (await restored.exec(["printenv", "SP_RESTORED"])).stdout == b"yes\n"
        assert (await restored.info()).labels.get("sp-restored") == "1"
        assert await restored.read_file("kept.txt") == b"k"

    @requires(Capability.SNAPSHOT)
    async def test_deleted_snapshot_cannot_be_restored(self, sandbox: Sandbox, sandboxes: Sandboxes) -> None:
        ref = await sandboxes.snapshot(sandbox)
        await sandbox.provider.delete_snapshot(ref)
        with pytest.raises(SandboxNotFound):
            await sandboxes.restore(ref)
        with pytest.raises(SandboxNotFound):
            await sandbox.provider.delete_snapshot(ref)

    @requires(Capability.SNAPSHOT)
    async def test_foreign_snapshot_ref_refused(self, provider: Provider) -> None:
        foreign = SnapshotRef(provider="sandport-other-provider", id="snap-foreign")
        with pytest.raises(CapabilityNotSupported):
            await provider.restore(foreign)
        missing = SnapshotRef(provider=provider.name, id="snap-does-not-exist")
        with pytest.raises(SandboxNotFound):
            await provider.restore(missing)
