"""The local provider: each sandbox is a private directory on this host.

Layout under the provider's root (``$SANDPORT_HOME/local``, default
``~/.local/share/sandport/local``, or ``/var/lib/sandport/local`` for root)::

    <root>/sandboxes/<id>/meta.json      spec (without secrets), labels, creation time
    <root>/sandboxes/<id>/secrets.json   the spec's secrets, mode 0600, never mounted
    <root>/sandboxes/<id>/fs/work/       shown at the spec's workdir (writable)
    <root>/sandboxes/<id>/fs/tmp/        shown at /tmp (writable)
    <root>/sandboxes/<id>/run/<pid>      processes running now (for terminate)
    <root>/sandboxes/.trash-<id>/        a sandbox being torn down (gc finishes a cut-short one)
    <root>/snapshots/<id>.tar + .json    snapshots, restorable by any later process

Each command is a fresh ``bwrap`` (see :mod:`sandport.local.isolation`) over that view, run
as an unprivileged host user when sandport runs as root, inside the sandbox's cgroup (see
:mod:`sandport.local.cgroups`). Files live on between commands, processes do not (use
``open_shell`` for a long-lived one).

When sandport runs as root, the directories down to ``fs/`` must be traversable by the
sandbox user (bwrap mounts them as that user): the root and ``sandboxes/`` are 0711, each
sandbox's directory and ``fs/`` are 0710 with the sandbox user's group, and ``fs/work`` and
``fs/tmp`` belong to the sandbox user.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets as secrets_module
import shutil
import signal
import stat
import subprocess
import time
import warnings
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import anyio
from pydantic import BaseModel, ConfigDict

from sandport.capabilities import Capability
from sandport.errors import (
    FileTooLarge,
    ProviderError,
    ProviderUnavailable,
    SandboxGone,
    SandboxNotFound,
)
from sandport.hostfiles import copy_tree
from sandport.local.cgroups import DEFAULT_PIDS, SandboxCgroup, cgroup_problem
from sandport.local.fs import SandboxFS
from sandport.local.isolation import (
    Mount,
    SandboxUser,
    bwrap_command,
    bwrap_problem,
    sandbox_user,
    system_mounts,
)
from sandport.local.process import LocalProcess, descendants
from sandport.local.snapshots import check_snapshot_id, new_snapshot_id, pack, unpack
from sandport.local.tree import open_dir, remove_tree
from sandport.models import FileInfo, SandboxInfo, SandboxSpec, SnapshotRef
from sandport.provider import LABEL_OWNER, Availability, Provider, current_owner, restored_spec
from sandport.sandbox import Sandbox

__all__ = ["LocalConfig", "LocalProvider", "LocalSandbox"]

log = logging.getLogger("sandport.local")

_BASE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Runs argv through sh so that a missing program is exit code 127, as in any shell.
_EXEC_SHIM = ["/bin/sh", "-c", 'exec "$@"', "sh"]
_TRASH = ".trash-"
_RESERVED = ("/proc", "/dev", "/tmp", "/usr", "/etc", "/bin", "/sbin", "/lib", "/lib64")


class LocalConfig(BaseModel):
    """``SandboxSpec.options`` for the local provider.

    isolation: ``bwrap`` (the default) confines every command with bubblewrap and fails
        with ``ProviderUnavailable`` where bwrap cannot run; it never falls back to running
        unconfined. ``none`` is the explicit opt-out: commands run as plain host processes
        (the spec must then allow the network, which nothing could keep them off).
    """

    model_config = ConfigDict(extra="forbid")

    isolation: Literal["bwrap", "none"] = "bwrap"


def default_root() -> Path:
    """``$SANDPORT_HOME/local``; else ``$XDG_DATA_HOME/sandport/local``; else, for root,
    ``/var/lib/sandport/local`` (root's home is not traversable by the sandbox user), and
    ``~/.local/share/sandport/local`` for anyone else."""
    base = os.environ.get("SANDPORT_HOME")
    if base:
        return Path(base) / "local"
    data = os.environ.get("XDG_DATA_HOME")
    if not data and os.geteuid() == 0:
        return Path("/var/lib/sandport/local")
    return Path(data or Path.home() / ".local" / "share") / "sandport" / "local"


def _unreachable(directory: Path, user: SandboxUser) -> str | None:
    """The first ancestor of ``directory`` the sandbox user cannot traverse, if any."""
    for ancestor in [*reversed(directory.parents), directory]:
        st = ancestor.stat()
        if not user.permits(st, 1):  # search
            return f"{ancestor} (mode {stat.S_IMODE(st.st_mode):o})"
    return None


_warned_unconfined = False


def _warn_unconfined() -> None:
    global _warned_unconfined
    if not _warned_unconfined:
        _warned_unconfined = True
        warnings.warn("sandport local sandboxes run UNCONFINED (isolation='none' was requested)", stacklevel=4)


def _starttime(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _discard(trash: Path) -> None:
    """Remove a sandbox directory renamed to ``.trash-<id>``: everything in it, then its
    ``meta.json``, then itself. A failure is logged, not raised: ``gc`` finishes the job."""
    try:
        fd = open_dir(trash)
        try:
            for name in os.listdir(fd):
                if name != "meta.json":
                    with contextlib.suppress(FileNotFoundError):
                        remove_tree(name, dir_fd=fd)
            with contextlib.suppress(FileNotFoundError):
                os.unlink("meta.json", dir_fd=fd)
        finally:
            os.close(fd)
        os.rmdir(trash)
    except FileNotFoundError:
        pass  # another process finished it
    except OSError as exc:
        log.warning("could not remove %s (%s); `sandport gc` will", trash, exc)


class LocalProvider(Provider):
    """Sandboxes as private directories, confined with bubblewrap when available."""

    name = "local"
    capabilities = frozenset({
        Capability.STREAMING, Capability.STDIN, Capability.SHELL, Capability.SNAPSHOT,
        Capability.NETWORK_NONE, Capability.NETWORK_OPEN, Capability.LIFETIME, Capability.PAUSE,
    })  # fmt: skip
    Config = LocalConfig

    def __init__(self, *, root: str | Path | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.root = Path(root) if root is not None else default_root()

    @property
    def _sandboxes(self) -> Path:
        return self.root / "sandboxes"

    @property
    def _snapshots(self) -> Path:
        return self.root / "snapshots"

    async def check(self) -> Availability:
        problem = await anyio.to_thread.run_sync(bwrap_problem)
        if problem:
            return Availability(usable=False, reason=problem)
        limits = cgroup_problem()
        pids = f"no pids limit: {limits}" if limits else "pids limit by cgroup"
        return Availability(usable=True, reason=f"bubblewrap isolation; {pids}")

    def _check_spec(self, spec: SandboxSpec) -> None:
        """A pids limit is the one resource limit a local sandbox can enforce, and only
        where it gets a cgroup."""
        resources = spec.resources
        pids_only = resources.pids is not None and not resources.model_copy(update={"pids": None}).is_set()
        if pids_only and cgroup_problem() is None:
            spec = spec.model_copy(update={"resources": type(resources)()})
        super()._check_spec(spec)

    def _isolation(self, spec: SandboxSpec, config: LocalConfig) -> str:
        if config.isolation == "none":
            if spec.network.mode != "open":
                raise ProviderUnavailable(
                    self.name,
                    f"network mode {spec.network.mode!r} cannot be enforced with isolation='none'; "
                    "set network='open' too, or keep isolation",
                )
            _warn_unconfined()
            return "none"
        if problem := bwrap_problem():
            raise ProviderUnavailable(self.name, problem)
        return "bwrap"

    async def _create(self, spec: SandboxSpec, options: Any) -> LocalSandbox:
        if spec.workdir.rstrip("/") in ("", *_RESERVED) or spec.workdir.startswith(tuple(r + "/" for r in _RESERVED)):
            raise ValueError(f"workdir {spec.workdir!r} overlaps a system path; use a path like /workspace")
        isolation = await anyio.to_thread.run_sync(self._isolation, spec, options)
        sandbox_id = "sp-" + secrets_module.token_hex(6)
        directory = self._sandboxes / sandbox_id
        cgroup = SandboxCgroup(sandbox_id)
        meta = {
            "id": sandbox_id,
            "created_at": datetime.now(UTC).isoformat(),
            "isolation": isolation,
            "spec": spec.model_dump(mode="json", exclude={"secrets"}),
        }
        try:
            await anyio.to_thread.run_sync(self._lay_out, directory, meta, spec)
            await anyio.to_thread.run_sync(cgroup.create, spec.resources.pids or DEFAULT_PIDS)
        except BaseException:
            shutil.rmtree(directory, ignore_errors=True)
            cgroup.remove()
            raise
        return LocalSandbox(self, directory, meta, spec)

    def _lay_out(self, directory: Path, meta: dict[str, Any], spec: SandboxSpec) -> None:
        user = sandbox_user()
        for shared in (self.root, self._sandboxes):  # traversable, not listable
            shared.mkdir(parents=True, exist_ok=True, mode=0o711)
            if user.drop and shared.stat().st_mode & 0o111 != 0o111:
                shared.chmod(shared.stat().st_mode | 0o111)  # the provider's own, say from mkdtemp()
        if user.drop and (blocked := _unreachable(self._sandboxes, user)):
            raise ProviderUnavailable(
                self.name,
                f"sandboxes run as the unprivileged user uid {user.uid}, which cannot reach {self._sandboxes}: "
                f"{blocked} is not traversable. Choose a root under a directory others may traverse "
                "(SANDPORT_HOME, or LocalProvider(root=...)), e.g. /var/lib/sandport",
            )
        directory.mkdir(mode=0o700)
        for sub in ("fs/work", "fs/tmp", "run"):
            (directory / sub).mkdir(parents=True, mode=0o700)
        (directory / "fs/tmp").chmod(0o1777)
        (directory / "fs/work").chmod(0o755)
        if user.drop:
            for sub in (".", "fs"):
                os.chown(directory / sub, 0, user.gid)
                (directory / sub).chmod(0o710)
            for sub in ("fs/work", "fs/tmp"):
                os.chown(directory / sub, user.uid, user.gid)
        fd = os.open(directory / "secrets.json", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(spec.secret_env(), f)
        (directory / "meta.json").write_text(json.dumps(meta))

    def _load(self, sandbox_id: str) -> LocalSandbox:
        directory = self._sandboxes / sandbox_id
        if "/" in sandbox_id or sandbox_id.startswith("."):
            raise SandboxNotFound(self.name, sandbox_id)
        try:
            meta = json.loads((directory / "meta.json").read_text())
            secret_values = json.loads((directory / "secrets.json").read_text())
        except FileNotFoundError:
            raise SandboxNotFound(self.name, sandbox_id) from None
        spec = SandboxSpec.model_validate({**meta["spec"], "secrets": secret_values})
        return LocalSandbox(self, directory, meta, spec)

    async def _connect(self, sandbox_id: str) -> LocalSandbox:
        sandbox = self._load(sandbox_id)
        sandbox._ensure_alive()
        return sandbox

    async def _list(self, labels: dict[str, str]) -> list[SandboxInfo]:
        if not self._sandboxes.is_dir():
            return []
        found = []
        for entry in sorted(self._sandboxes.iterdir()):
            try:
                found.append(self._load(entry.name)._describe())
            except (SandboxNotFound, ValueError, KeyError):
                continue  # half-removed or foreign directory
        return found

    async def _restore(self, snapshot: SnapshotRef, overrides: dict[str, Any]) -> LocalSandbox:
        check_snapshot_id(self.name, snapshot.id)
        archive = self._snapshots / f"{snapshot.id}.tar"
        meta_file = self._snapshots / f"{snapshot.id}.json"
        if not archive.is_file() or not meta_file.is_file():
            raise SandboxNotFound(self.name, snapshot.id, what="snapshot")
        spec_data = json.loads(meta_file.read_text())["spec"]
        spec = restored_spec(spec_data, overrides)
        sandbox = await self.create(spec)
        assert isinstance(sandbox, LocalSandbox)
        try:
            await anyio.to_thread.run_sync(sandbox._unpack, archive)
        except BaseException:
            await sandbox.terminate()
            raise
        return sandbox

    async def _delete_snapshot(self, snapshot: SnapshotRef) -> None:
        check_snapshot_id(self.name, snapshot.id)
        archive = self._snapshots / f"{snapshot.id}.tar"
        if not archive.is_file():
            raise SandboxNotFound(self.name, snapshot.id, what="snapshot")
        archive.unlink()
        (self._snapshots / f"{snapshot.id}.json").unlink(missing_ok=True)

    async def gc(
        self,
        older_than: timedelta = timedelta(0),
        *,
        owner: str | None = None,
        include_kept: bool = False,
        dry_run: bool = False,
    ) -> list[str]:
        """:meth:`Provider.gc`, then finish the teardowns of ``owner``'s sandboxes that were
        cut short (their ``.trash-<id>`` directories); their ids are returned too."""
        removed = await super().gc(older_than, owner=owner, include_kept=include_kept, dry_run=dry_run)
        leftovers = await anyio.to_thread.run_sync(self._trash, owner or current_owner())
        for trash in leftovers if not dry_run else []:
            await anyio.to_thread.run_sync(_discard, trash)
        return [*removed, *(trash.name.removeprefix(_TRASH) for trash in leftovers)]

    def _trash(self, owner: str) -> list[Path]:
        """The ``.trash-<id>`` directories of sandboxes ``owner`` created (or whose
        metadata is gone already: nothing but the directory is left of those)."""
        if not self._sandboxes.is_dir():
            return []
        found = []
        for entry in sorted(self._sandboxes.glob(_TRASH + "*")):
            try:
                labels = json.loads((entry / "meta.json").read_text())["spec"]["labels"]
            except FileNotFoundError:
                labels = {LABEL_OWNER: owner}
            except (OSError, ValueError, KeyError, TypeError):
                continue  # not ours to judge
            if labels.get(LABEL_OWNER) == owner:
                found.append(entry)
        return found


class LocalSandbox(Sandbox):
    """A sandbox of the local provider."""

    provider: LocalProvider

    def __init__(self, provider: LocalProvider, directory: Path, meta: dict[str, Any], spec: SandboxSpec) -> None:
        super().__init__(provider, meta["id"], spec)
        self.directory = directory
        self._meta = meta
        self.isolation: str = meta["isolation"]
        self._created = datetime.fromisoformat(meta["created_at"])
        self._mounts = [
            *system_mounts(),
            Mount(spec.workdir.rstrip("/") or "/", host=str(directory / "fs/work"), writable=True),
            Mount("/tmp", host=str(directory / "fs/tmp"), writable=True),
        ]
        self.user = sandbox_user() if self.isolation == "bwrap" else SandboxUser(os.getuid(), os.getgid(), drop=False)
        self.fs = SandboxFS(self._mounts, self.user)
        self.cgroup = SandboxCgroup(self.id)

    # -- liveness ------------------------------------------------------------------------

    def _deadline(self) -> float | None:
        if self.spec.lifetime is None:
            return None
        age = (datetime.now(UTC) - self._created).total_seconds()
        return time.monotonic() + self.spec.lifetime - age

    def _check_present(self) -> None:
        if not (self.directory / "meta.json").exists():
            self._terminated = True
            raise SandboxGone(self.provider.name, self.id, "it was terminated")

    def _ensure_alive(self) -> None:
        self._check_present()
        deadline = self._deadline()
        if deadline is not None and deadline <= time.monotonic():
            self._teardown()
            self._terminated = True
            raise SandboxGone(self.provider.name, self.id, f"its lifetime of {self.spec.lifetime:g}s ran out")

    def _host_path(self, path: str) -> str:
        """Where a sandbox path is on the host (used for cwd when running unconfined)."""
        resolved = self.fs.resolve(path)
        for mount in self._mounts:
            if mount.host and (resolved == mount.path or resolved.startswith(mount.path + "/")):
                return mount.host + resolved[len(mount.path) :]
        return resolved

    # -- processes -----------------------------------------------------------------------

    async def _start(self, argv: list[str], *, cwd: str, env: dict[str, str], user: str | None) -> LocalProcess:
        self._ensure_alive()
        if self._pause_marker.exists():
            raise ProviderError(self.provider.name, f"sandbox {self.id} is paused; resume() it first")
        unconfined = self.isolation == "none"
        home = self._host_path(self.spec.workdir) if unconfined else self.spec.workdir
        full_env = {"PATH": _BASE_PATH, "HOME": home, "TMPDIR": "/tmp" if not unconfined else self._host_path("/tmp"),
                    "LANG": "C.UTF-8", **env}  # fmt: skip
        info = self.fs.stat(cwd)  # one local stat: cheaper inline than a thread hop
        if not info.is_dir:
            raise NotADirectoryError(f"cwd {cwd!r} is not a directory in the sandbox")
        if unconfined:
            command, host_cwd = [*_EXEC_SHIM, *argv], self._host_path(cwd)
        else:
            network = self.spec.network.mode == "open"
            command = bwrap_command(self._mounts, network=network, cwd=cwd, argv=[*_EXEC_SHIM, *argv], user=self.user)
            host_cwd = "/"
        group = self.cgroup.child("cmd-" + secrets_module.token_hex(4))
        group.create(joinable_by=self.user.uid if self.user.drop else None)
        # Popen returns once the child has exec'd (about a millisecond); asyncio's own
        # subprocess support would add a watcher thread per process, which costs more.
        proc = subprocess.Popen(  # noqa: ASYNC220
            [*group.join_argv(), *command],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=host_cwd,
            env=full_env,
            start_new_session=True,
            **self.user.popen_args(),
        )
        pidfile = self.directory / "run" / str(proc.pid)
        pidfile.write_text(_starttime(proc.pid) or "")
        return LocalProcess(
            proc,
            max_output_bytes=self.spec.max_output_bytes,
            deadline=self._deadline(),
            pidfile=pidfile,
            check_sandbox=self._check_present,
            cgroup=group,
        )

    def _running(self, directory: Path | None = None) -> list[int]:
        """Process groups this sandbox started and that still run, from any process (run/
        of ``directory``, by default the sandbox's)."""
        run = (directory or self.directory) / "run"
        alive = []
        for pidfile in run.glob("*") if run.is_dir() else []:
            pid = int(pidfile.name)
            started = _starttime(pid)
            if started is not None and started == pidfile.read_text():
                alive.append(pid)
            else:  # exited, and perhaps its pid reused: not ours any more
                pidfile.unlink(missing_ok=True)
        return alive

    def _kill_all(self, directory: Path | None = None) -> None:
        """Kill every process this sandbox started: its whole cgroup where it has one, and
        every process group it started (recorded under ``directory``, by default the
        sandbox's)."""
        self.cgroup.kill()
        for pid in self._running(directory):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
            ((directory or self.directory) / "run" / str(pid)).unlink(missing_ok=True)

    def _signal_trees(self, sig: signal.Signals) -> None:
        """Send ``sig`` to every process of the sandbox, including ones that left their
        process group; swept twice so that a child forked during the first sweep is caught."""
        for _ in range(2):
            self.cgroup.signal(sig)
            for pid in self._running():
                for member in (pid, *descendants(pid)):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(member, sig)

    @property
    def _pause_marker(self) -> Path:
        return self.directory / "paused"

    async def _pause(self) -> None:
        self._ensure_alive()
        self._pause_marker.touch()
        await anyio.to_thread.run_sync(self._signal_trees, signal.SIGSTOP)

    async def _resume(self) -> None:
        self._ensure_alive()
        await anyio.to_thread.run_sync(self._signal_trees, signal.SIGCONT)
        self._pause_marker.unlink(missing_ok=True)

    # -- files ---------------------------------------------------------------------------

    async def _fs(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        self._ensure_alive()
        return await anyio.to_thread.run_sync(lambda: fn(*args, **kwargs))

    async def _read_file(self, path: str) -> bytes:
        try:
            data: bytes = await self._fs(self.fs.read, path, self.spec.max_file_bytes)
        except ValueError as exc:
            raise FileTooLarge(path, int(exc.args[0]), self.spec.max_file_bytes) from None
        return data

    async def _write_file(self, path: str, data: bytes, *, mode: int | None, parents: bool) -> None:
        await self._fs(self.fs.write, path, data, mode=mode, parents=parents)

    async def _list_dir(self, path: str) -> list[FileInfo]:
        entries: list[FileInfo] = await self._fs(self.fs.list_dir, path)
        return entries

    async def _stat(self, path: str) -> FileInfo:
        info: FileInfo = await self._fs(self.fs.stat, path)
        return info

    async def _mkdir(self, path: str, *, parents: bool, exist_ok: bool) -> None:
        await self._fs(self.fs.mkdir, path, parents=parents, exist_ok=exist_ok)

    async def _remove(self, path: str, *, recursive: bool) -> None:
        await self._fs(self.fs.remove, path, recursive=recursive)

    async def _upload(self, source: Path, target: str) -> None:
        if source.is_symlink() or not source.is_file():
            await super()._upload(source, target)  # walks directories, calling back here
            return

        def copy_in() -> None:
            with source.open("rb") as f:
                self.fs.write(target, f, mode=os.fstat(f.fileno()).st_mode & 0o777, parents=True)

        await self._fs(copy_in)

    async def _download(self, source: str, target: Path) -> None:
        def copy_out() -> bool:  # streamed (no read cap); nothing below the source is followed
            fd = self.fs.open_tree(source)
            if fd is None:
                return False
            try:
                copy_tree(fd, target)
            finally:
                os.close(fd)
            return True

        if not await self._fs(copy_out):
            await super()._download(source, target)  # a directory made of mounts: the generic walk

    # -- snapshots and lifecycle ---------------------------------------------------------

    async def _snapshot(self) -> SnapshotRef:
        self._ensure_alive()
        snapshot_id = new_snapshot_id()
        store = self.provider._snapshots
        ref = SnapshotRef(provider=self.provider.name, id=snapshot_id, sandbox_id=self.id,
                          metadata={"path": str(store / f"{snapshot_id}.tar")})  # fmt: skip

        def write() -> None:
            store.mkdir(parents=True, exist_ok=True, mode=0o700)
            partial = store / f".{snapshot_id}.tar.partial"
            try:
                pack(self.directory / "fs", partial)
                partial.rename(store / f"{snapshot_id}.tar")
            finally:
                partial.unlink(missing_ok=True)
            meta = {"ref": ref.model_dump(mode="json"), "spec": self.spec.model_dump(mode="json", exclude={"secrets"})}
            (store / f"{snapshot_id}.json").write_text(json.dumps(meta))

        await anyio.to_thread.run_sync(write)
        return ref

    def _unpack(self, archive: Path) -> None:
        """Fill this new sandbox from ``archive`` before anything runs in it: extracted into
        a fresh private directory beside ``fs`` (see :func:`unpack`), which then takes the
        place of ``fs`` with its mode and owner; files belong to whoever owns ``fs/work``."""
        fs = self.directory / "fs"
        staging = self.directory / f"fs.restoring-{secrets_module.token_hex(6)}"
        replaced = self.directory / f"fs.replaced-{secrets_module.token_hex(6)}"
        os.mkdir(staging, 0o700)
        try:
            layout, work = os.lstat(fs), os.lstat(fs / "work")
            mine = (os.geteuid(), os.getegid())
            owner = (work.st_uid, work.st_gid)
            unpack(archive, staging, owner=None if owner == mine else owner)
            if (layout.st_uid, layout.st_gid) != mine:
                os.chown(staging, layout.st_uid, layout.st_gid)
            os.chmod(staging, stat.S_IMODE(layout.st_mode))
            os.rename(fs, replaced)
            os.rename(staging, fs)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                remove_tree(staging)
            raise
        try:
            remove_tree(replaced)
        except OSError as exc:  # the restore is done; terminate removes what is left
            log.warning("could not remove %s (%s)", replaced, exc)

    def _describe(self) -> SandboxInfo:
        return SandboxInfo(
            id=self.id,
            provider=self.provider.name,
            state="terminated" if self._terminated else "paused" if self._pause_marker.exists() else "running",
            created_at=self._created,
            labels=self.spec.labels,
            workdir=self.spec.workdir,
            isolation=self.isolation,
            network=self.spec.network.mode,
        )

    async def _info(self) -> SandboxInfo:
        if not self._terminated and not (self.directory / "meta.json").exists():
            self._terminated = True
        return self._describe()

    def _teardown(self) -> None:
        # Renamed first, before any process is killed, so that every process sees the
        # sandbox gone at once (no sandboxes/<id>/meta.json any more) and a command killed
        # here reports SandboxGone, not an exit code; meta.json itself goes last, so a
        # teardown cut short leaves a .trash-<id> directory that gc recognises and finishes.
        trash = self.directory.with_name(_TRASH + self.id)
        try:
            os.rename(self.directory, trash)
        except FileNotFoundError:
            trash = self.directory  # torn down already (or being torn down) elsewhere
        self._kill_all(trash)
        self.cgroup.remove()
        if trash != self.directory:
            _discard(trash)

    async def _terminate(self) -> None:
        await anyio.to_thread.run_sync(self._teardown)
