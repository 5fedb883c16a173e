"""A Docker sandbox: one hardened, labelled container."""

from __future__ import annotations

import errno
import os
import posixpath
import secrets as secrets_module
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, TypeVar

import anyio

from sandport.audit import Redactor
from sandport.errors import ProviderError, SandboxGone
from sandport.models import ExecResult, FileInfo, SandboxInfo, SandboxSpec, SnapshotRef
from sandport.process import Process
from sandport.sandbox import Command, Sandbox
from sandport.shell import Shell
from sandport_docker import files, secretstore, userfiles
from sandport_docker.config import DockerConfig
from sandport_docker.engine import NAME, ExecStartError, api_error_text, docker_errors, status_of
from sandport_docker.files import ContainerGone, Owner
from sandport_docker.helper import ENV, HelperResult, HelperSession
from sandport_docker.process import KILL_SCRIPT, MARKER, DockerProcess, StartRefused, wrap
from sandport_docker.secretstore import LABEL_SECRETS, SECRETS_DIR

if TYPE_CHECKING:
    from sandport_docker.provider import DockerProvider

__all__ = [
    "LABEL_SECRETS",
    "LABEL_SNAPSHOT",
    "LABEL_SPEC",
    "LABEL_USER",
    "SECRETS_DIR",
    "SNAPSHOT_REPOSITORY",
    "DockerSandbox",
]

T = TypeVar("T")

#: The spec (without secrets) as JSON, so that another process can ``connect``.
LABEL_SPEC = "sandport.spec"
#: The user commands run as by default (``spec.user``, else the image's USER), when not root.
#: The container itself runs as root: with ``no-new-privileges`` an exec as root in a
#: container created for another user would get no capabilities at all, and sandport's
#: own helpers (kill, rename, remove) need a few.
LABEL_USER = "sandport.user"
#: On snapshot images: the id of the sandbox they were taken from.
LABEL_SNAPSHOT = "sandport.snapshot"
SNAPSHOT_REPOSITORY = "sandport-snapshot"
_ROOT = "0"  # helpers run as uid 0, whatever the sandbox's default user is
#: Engine errors at exec start that say the sandbox is broken rather than going away: no
#: need to wait for the engine to report the container stopped.
_STABLE_START_ERRORS = (
    "/dev/null",
    "unable to find user",
    "no matching entries in passwd",
    "executable file not found",
    "resource temporarily unavailable",
)


def _spec_label(spec: SandboxSpec) -> str:
    return spec.model_dump_json(exclude={"secrets"})


def parse_user(text: str) -> tuple[str, str | None]:
    user, _, group = text.partition(":")
    return user, group or None


class DockerSandbox(Sandbox):
    """A sandbox of the Docker provider. ``id`` is the container's short id."""

    provider: DockerProvider

    def __init__(
        self,
        provider: DockerProvider,
        container_id: str,
        spec: SandboxSpec,
        options: DockerConfig,
        created: datetime,
        default_user: str = "",
    ) -> None:
        super().__init__(provider, container_id[:12], spec)
        #: Who commands run as unless ``exec(user=...)`` says otherwise ("" is root).
        self.default_user = default_user
        self.container_id = container_id
        self.options = options
        self.created = created
        self._engine = provider.engine
        self._owner: Owner | None = None
        self._session = HelperSession(self)
        #: For a non-root default user: the session its file operations run in.
        self._user_session = HelperSession(self, user=default_user)
        self._paused = False
        self._removed_here = False  # terminate() was called on this object
        #: The seal of secrets stored in the container and not loaded yet (after connect).
        self._sealed_secrets: str | None = None
        self._secrets_lock = anyio.Lock()

    # -- plumbing ------------------------------------------------------------------------

    def _gone(self, detail: str) -> SandboxGone:
        self._terminated = True
        return SandboxGone(NAME, self.id, detail)

    def _missing(self) -> str:
        """Why the container is not there any more, as far as we can tell."""
        deadline = self._deadline()
        if deadline is not None and deadline <= time.monotonic():
            return f"its lifetime of {self.spec.lifetime:g}s ran out"
        return (
            "its container no longer exists (terminated by another process, killed or removed "
            "from outside, or stopped by an engine restart)"
        )

    async def _call(self, fn: Callable[[Any], T]) -> T:
        """An SDK call about this container: a vanished container becomes ``SandboxGone``."""
        try:
            return await self._engine.call(fn)
        except ContainerGone:
            raise self._gone(self._missing()) from None
        except docker_errors.NotFound as exc:
            if "no such container" in api_error_text(exc).lower():
                raise self._gone(self._missing()) from None
            raise

    def _deadline(self) -> float | None:
        if self.spec.lifetime is None:
            return None
        age = (datetime.now(UTC) - self.created).total_seconds()
        return time.monotonic() + self.spec.lifetime - age

    async def _state_problem(self) -> str | None:
        """Why the container cannot run commands, or None if it is running."""
        try:
            data = await self._engine.call(lambda api: api.inspect_container(self.container_id))
        except docker_errors.NotFound:
            return self._missing()
        state = data.get("State") or {}
        if state.get("Running"):
            return None
        why = " (out of memory)" if state.get("OOMKilled") else ""
        return f"its container stopped with status {state.get('ExitCode')}{why}"

    # -- exec ----------------------------------------------------------------------------

    def _exec_refused(self, status: int | None, message: str) -> Exception:
        lowered = message.lower()
        if status == 404 or "no such container" in lowered:
            return self._gone(self._missing())
        if "is paused" in lowered:
            return ProviderError(NAME, f"sandbox {self.id} is paused; resume() it before running commands")
        if "not running" in lowered:
            return self._gone("its container is not running")
        return ProviderError(NAME, f"exec in {self.id} failed: {message}")

    async def _spawn(
        self, argv: list[str], *, cwd: str, env: dict[str, str], user: str | None, stdin: bool
    ) -> DockerProcess:
        """Start ``argv`` under the wrapper as ``user`` (default: the sandbox's user).

        Raises:
            SandboxGone: the container is gone or going away.
            ProviderError: the engine could not start the process (its message attached).
            FileNotFoundError, NotADirectoryError, PermissionError: about ``cwd``.
        """
        command = wrap(argv, cwd)
        user = user or self.default_user
        token = secrets_module.token_hex(8)
        environment = {**env, MARKER: token}

        def create(api: Any) -> str:
            result = api.exec_create(
                self.container_id, command, stdout=True, stderr=True, stdin=stdin, tty=False,
                environment=environment, user=user,
            )  # fmt: skip
            return str(result["Id"])

        try:
            exec_id = await self._engine.call(create)
        except docker_errors.APIError as exc:
            raise self._exec_refused(status_of(exc), api_error_text(exc)) from None
        try:
            stream, pending = await self._engine.start_exec(exec_id)
        except ExecStartError as exc:
            raise self._exec_refused(exc.status, exc.message) from None
        process = DockerProcess(
            self, exec_id, stream, pending, cwd=cwd, stdin=stdin,
            max_output_bytes=self.spec.max_output_bytes, deadline=self._deadline(), user=user, token=token,
        )  # fmt: skip
        try:
            await process._handshake()
        except StartRefused as refused:
            await process.aclose()
            raise await self._start_refused(refused.text) from None
        except BaseException:
            await process.aclose()
            raise
        return process

    async def _start_refused(self, text: str) -> Exception:
        """The error for an exec the engine started without running the wrapper: the
        container is going away (``SandboxGone``, once the engine admits it; it may still
        call the container running for a moment) or cannot start processes
        (``ProviderError`` with the engine's message: never the command's output)."""
        stable = any(needle in text.lower() for needle in _STABLE_START_ERRORS)
        for delay in (0.0,) if stable else (0.0, 0.05, 0.1, 0.2, 0.4, 0.8, 1.5):
            await anyio.sleep(delay)
            if self._removed_here:
                return self._gone("it was terminated")
            problem = await self._state_problem()
            if problem:
                return self._gone(problem)
        hint = ""
        if "/dev/null" in text:
            hint = " (the sandbox removed /dev/null, which the container runtime needs to start any process)"
        return ProviderError(
            NAME, f"the engine could not start a process in sandbox {self.id}: {text or 'no reason given'}{hint}"
        )

    async def _exec_exit_code(self, exec_id: str, *, killed_by_us: bool = False) -> int:
        """The exit status of a finished exec; ``SandboxGone`` if the container died."""
        delay = 0.001
        while True:
            try:
                data = await self._engine.call(lambda api: api.exec_inspect(exec_id))
            except docker_errors.NotFound:
                if self._removed_here:  # we terminated the sandbox: its commands were killed
                    return 128 + 9
                problem = await self._state_problem()
                raise self._gone(problem or "its container was replaced") from None
            code = data.get("ExitCode")
            if not data.get("Running") and code is not None:
                break
            if delay >= 0.05 and (problem := await self._state_problem()):
                if self._removed_here:
                    return 128 + 9
                raise self._gone(problem)
            await anyio.sleep(delay)
            delay = min(delay * 2, 0.1)
        code = int(code)
        if code >= 128 or code < 0:
            # Killed by a signal: by us, by the OOM killer, by the command itself, or with
            # the whole container (then the engine may take a moment to notice it stopped).
            problem = await self._state_problem()
            if problem is None and not killed_by_us and (code == 137 or code < 0):
                problem = await self._dying()
            if problem and not self._removed_here:
                raise self._gone(problem)
        return code

    async def _dying(self) -> str | None:
        """Why the container is going away, or None if it still runs commands. For a command
        SIGKILLed by nobody in this process, while the engine still calls the container
        running: a no-op job in the helper shell settles it (a dying container runs none)."""
        try:
            with anyio.fail_after(10):
                await self._session.run(":")
            return None
        except SandboxGone:
            return await self._state_problem() or "its container is going away"
        except (ProviderError, TimeoutError):
            for _ in range(15):
                await anyio.sleep(0.2)
                problem = await self._state_problem()
                if problem:
                    return problem
            return None

    async def _kill_group(self, pid: int, token: str, user: str) -> None:
        """Kill a command's session, process group, descendants and every process carrying
        its marker ``token`` (see :data:`~sandport_docker.process.KILL_SCRIPT`), from a fresh
        exec as the command's ``user`` (never queued behind a helper job); if no process can
        be started (pids limit reached), from the root helper shell without forking."""
        argv = ["/bin/sh", "-c", KILL_SCRIPT, "sh", str(pid), token]
        try:
            process = await self._spawn(argv, cwd="/", env=ENV, user=user or _ROOT, stdin=False)
        except SandboxGone:
            return
        except ProviderError:
            if self._session.started:
                try:
                    await self._session.run(KILL_SCRIPT, str(pid), token, inline=True)
                except (SandboxGone, ProviderError):
                    pass
            return
        try:
            with anyio.move_on_after(30):
                await process.wait()
        except (SandboxGone, ProviderError):
            pass
        finally:
            await process.aclose()

    def _refuse_if_paused(self) -> None:
        if self._paused:
            raise ProviderError(NAME, f"sandbox {self.id} is paused; resume() it first")

    async def _helper(self, script: str, *args: str, limit: int | None = None) -> HelperResult:
        """Run a shell script as root in ``/`` in the sandbox's helper session."""
        self._refuse_if_paused()
        if limit is None:
            return await self._session.run(script, *args)
        return await self._session.run(script, *args, limit=limit)

    async def _as_user(self) -> bool:
        """Whether file operations must run with the default user's rights (it is not root)."""
        return (await self._file_owner()).uid != 0

    async def _file_helper(self, script: str, *args: str, limit: int | None = None) -> HelperResult:
        """Run a file operation's script with the rights of the sandbox's default user: as
        root for a root sandbox, else in the session that runs as that user."""
        if not await self._as_user():
            return await self._helper(script, *args, limit=limit)
        self._refuse_if_paused()
        if limit is None:
            return await self._user_session.run(script, *args)
        return await self._user_session.run(script, *args, limit=limit)

    async def _start(self, argv: list[str], *, cwd: str, env: dict[str, str], user: str | None) -> DockerProcess:
        return await self._spawn(argv, cwd=cwd, env=env, user=user, stdin=True)

    async def _exec(
        self,
        argv: list[str],
        *,
        cwd: str,
        env: dict[str, str],
        stdin: bytes | None,
        timeout: float | None,
        user: str | None,
    ) -> ExecResult:
        if stdin is not None:  # the generic path feeds stdin while collecting output
            return await super()._exec(argv, cwd=cwd, env=env, stdin=stdin, timeout=timeout, user=user)
        process = await self._spawn(argv, cwd=cwd, env=env, user=user, stdin=False)
        return await process.wait(timeout)

    # -- secrets -------------------------------------------------------------------------

    async def _store_secrets(self) -> None:
        """Write the secrets to the container's root-only tmpfs, for ``connect`` from another
        process; the provider sealed the same bytes (:func:`secretstore.encode`) at create."""
        payload = secretstore.encode(self.spec.secret_env()).decode()
        result = await self._helper(secretstore.STORE_SCRIPT, payload)
        if result.exit_code != 0:
            raise ProviderError(NAME, f"could not store the secrets in {self.id}: {result.stderr_text.strip()}")

    async def _ensure_secrets(self) -> None:
        """Load the secrets a connected sandbox keeps, once, before the first command: read
        (capped) from the container, injected and redacted only if they match the seal the
        creating process recorded in the container's labels.

        Raises:
            SecretsTampered: they do not match (the sandbox rewrote them); every command
                refuses to run until then, but ``terminate`` works.
            ProviderError: they cannot be read.
        """
        if self._sealed_secrets is None:
            return
        self._check_alive()
        async with self._secrets_lock:
            seal = self._sealed_secrets
            if seal is None:
                return
            try:
                with anyio.fail_after(30):
                    result = await self._helper(secretstore.READ_SCRIPT, limit=secretstore.MAX_SECRETS_BYTES)
            except TimeoutError:
                raise ProviderError(NAME, f"reading the secrets of {self.id} took too long") from None
            if result.exit_code != 0:
                raise ProviderError(
                    NAME,
                    f"could not read the secrets of {self.id} (exit {result.exit_code}): "
                    f"{result.stderr_text.strip()[:300] or 'the file is missing or not a regular file'}",
                )
            values = secretstore.unseal(result.stdout, seal, self.id)
            secrets = SandboxSpec.model_validate({"secrets": values}).secrets
            self.spec = self.spec.model_copy(update={"secrets": secrets})
            self._redactor = Redactor(values.values())
            self._sealed_secrets = None

    async def exec(
        self,
        cmd: Command,
        *,
        cwd: str | None = None,
        env: Mapping[str, str] | None = None,
        stdin: bytes | str | None = None,
        timeout: float | None = None,
        user: str | None = None,
        check: bool = False,
    ) -> ExecResult:
        """As :meth:`Sandbox.exec`; after ``connect``, the sandbox's secrets are loaded and
        verified first (:meth:`_ensure_secrets`)."""
        await self._ensure_secrets()
        return await super().exec(cmd, cwd=cwd, env=env, stdin=stdin, timeout=timeout, user=user, check=check)

    async def start(
        self,
        cmd: Command,
        *,
        cwd: str | None = None,
        env: Mapping[str, str] | None = None,
        user: str | None = None,
    ) -> Process:
        """As :meth:`Sandbox.start`, secrets loaded first as for :meth:`exec`."""
        await self._ensure_secrets()
        return await super().start(cmd, cwd=cwd, env=env, user=user)

    async def open_shell(self) -> Shell:
        """As :meth:`Sandbox.open_shell`, secrets loaded first as for :meth:`exec`."""
        await self._ensure_secrets()
        return await super().open_shell()

    # -- files ---------------------------------------------------------------------------

    async def _file_owner(self) -> Owner:
        if self._owner is None:
            user = self.default_user
            self._owner = await self._call(lambda api: resolve_owner(api, self.container_id, user))
        return self._owner

    async def _read_file(self, path: str) -> bytes:
        if await self._as_user():
            return await userfiles.read_file(self, path, self.spec.max_file_bytes)
        try:
            return await self._call(lambda api: files.get_file(api, self.container_id, path, self.spec.max_file_bytes))
        except files.NotArchivable:  # a name that is not UTF-8: the helper shell reads it
            return await userfiles.read_file(self, path, self.spec.max_file_bytes)

    async def _stat(self, path: str) -> FileInfo:
        if await self._as_user():
            return await userfiles.stat(self, path)

        def stat(api: Any) -> FileInfo:
            real, found = files.resolve(api, self.container_id, path)
            if found is None:
                files.missing_reason(api, self.container_id, real)
                raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), path)
            info: FileInfo = found.info(real)
            return info

        try:
            return await self._call(stat)
        except files.NotArchivable:  # a symlink whose name and target are not UTF-8
            return await userfiles.stat(self, path)

    async def _write_file(self, path: str, data: bytes, *, mode: int | None, parents: bool) -> None:
        """Written under a temporary name next to the target, then renamed over it: readers
        see the old file or the new one, never a part."""
        self._refuse_if_paused()
        if await self._as_user():
            return await userfiles.write_file(self, path, data, mode=mode, parents=parents)
        owner = await self._file_owner()
        cid = self.container_id
        temp = f".sandport-{secrets_module.token_hex(6)}.tmp"
        written: list[str] = []  # where the temporary file went, once known

        def write(api: Any) -> tuple[str, str]:
            real, found = files.resolve(api, cid, path)
            if found is not None and found.type == "dir":
                raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), path)
            bits = mode if mode is not None else (found.permissions if found is not None else 0o644)
            parent, name = posixpath.split(real)
            base, missing = parent, list[str]()
            if found is None:
                base, missing = _existing_ancestor(api, cid, parent, path)
                if missing and not parents:
                    raise FileNotFoundError(errno.ENOENT, "parent directory missing", path)
            names = [posixpath.join(*missing[: i + 1]) for i in range(len(missing))]
            written.append(posixpath.join(base, *missing, temp))
            files.put(api, cid, base, files.file_tar(names, posixpath.join(*missing, temp), data, bits, owner))
            return posixpath.join(base, *missing), name

        try:
            directory, name = await self._call(write)
        except BaseException:
            if written:  # the upload broke off: do not leave a partial temporary file behind
                with anyio.CancelScope(shield=True), anyio.move_on_after(10):
                    try:
                        await self._helper('rm -f -- "$1"', written[0])
                    except Exception:
                        pass
            raise
        source, target = posixpath.join(directory, temp), posixpath.join(directory, name)
        result = await self._helper('mv -f -T -- "$1" "$2" || { rm -f -- "$1"; exit 1; }', source, target)
        _raise_for_helper(result, path)

    async def _mkdir(self, path: str, *, parents: bool, exist_ok: bool) -> None:
        if await self._as_user():
            return await userfiles.mkdir(self, path, parents=parents, exist_ok=exist_ok)
        owner = await self._file_owner()
        cid = self.container_id

        def mkdir(api: Any) -> None:
            real, found = files.resolve(api, cid, path)
            if found is not None:
                if found.type != "dir":
                    raise FileExistsError(errno.EEXIST, "a file is in the way", path)
                if not exist_ok:
                    raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), path)
                return
            base, missing = _existing_ancestor(api, cid, real, path)
            if len(missing) > 1 and not parents:
                raise FileNotFoundError(errno.ENOENT, "parent directory missing", path)
            names = [posixpath.join(*missing[: i + 1]) for i in range(len(missing))]
            files.put(api, cid, base, files.dir_tar(names, owner))

        await self._call(mkdir)

    async def _list_dir(self, path: str) -> list[FileInfo]:
        result = await self._file_helper(files.LIST_SCRIPT, path)
        _raise_for_helper(result, path)
        return files.parse_listing(result.stdout, path)

    async def _remove(self, path: str, *, recursive: bool) -> None:
        result = await self._file_helper(files.REMOVE_SCRIPT, path, "1" if recursive else "0")
        _raise_for_helper(result, path)

    async def _upload(self, source: Path, target: str) -> None:
        if await self._as_user():
            return await userfiles.upload(self, source, target)
        owner = await self._file_owner()
        cid = self.container_id
        real, found = await self._call(lambda api: files.resolve(api, cid, target))
        if found is not None and found.type == "dir" and not source.is_dir():
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), target)  # as on local: nothing changed
        if found is not None and (found.type == "dir" or source.is_dir()):
            await self._remove(real, recursive=True)  # "created or replaced", never merged
        parent, name = posixpath.split(real)

        def upload(api: Any) -> None:
            base, missing = _existing_ancestor(api, cid, parent, target)
            if missing:
                names = [posixpath.join(*missing[: i + 1]) for i in range(len(missing))]
                files.put(api, cid, base, files.dir_tar(names, owner))
            files.put(api, cid, parent, files.tree_tar(source, name, owner))

        await self._call(upload)

    async def _download(self, source: str, target: Path) -> None:
        if await self._as_user():  # the core's walk, through the user's file operations
            return await super()._download(source, target)
        cid = self.container_id

        def download(api: Any) -> None:
            real, found = files.resolve(api, cid, source)
            if found is None:
                files.missing_reason(api, cid, real)
                raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), source)
            files.untar_to(api, cid, real, target)

        try:
            await self._call(download)
        except files.NotArchivable:  # a file whose name is not UTF-8: copied with _read_file
            await super()._download(source, target)

    async def _download_data(self, path: str, info: FileInfo) -> bytes | IO[bytes]:
        """Streams files of any size (the walk is only used for a non-root default user)."""
        return await userfiles.file_data(self, path, info)

    # -- snapshots and lifecycle ---------------------------------------------------------

    async def _snapshot(self) -> SnapshotRef:
        tag = f"{self.id}-{secrets_module.token_hex(4)}"
        reference = f"{SNAPSHOT_REPOSITORY}:{tag}"
        labels = {LABEL_SNAPSHOT: self.id, LABEL_SPEC: _spec_label(self.spec)}
        conf = {"Labels": labels}
        cid = self.container_id
        workdir = self.spec.workdir

        def commit(api: Any) -> str:
            if not self.options.read_only_root:
                return _commit(api, cid, conf, tag=tag)
            # The workdir is a volume, which a commit leaves out: copy it into the image.
            interim = _commit(api, cid, conf)
            helper = api.create_container(
                interim, entrypoint=["/bin/sh"], labels={LABEL_SNAPSHOT: self.id},
                host_config=api.create_host_config(network_mode="none"),
            )["Id"]  # fmt: skip
            try:
                chunks, _ = api.get_archive(cid, workdir, chunk_size=2 * 1024 * 1024)
                files.put(api, helper, posixpath.dirname(workdir.rstrip("/")) or "/", chunks)
                return _commit(api, helper, conf, tag=tag, pause=False)
            finally:
                api.remove_container(helper, force=True, v=True)
                try:
                    api.remove_image(interim)  # only its tag-less name: the snapshot keeps its layers
                except docker_errors.APIError:
                    pass

        try:
            image_id = await self._call(commit)
        except docker_errors.APIError as exc:
            raise ProviderError(NAME, f"snapshot of {self.id} failed: {api_error_text(exc)}") from exc
        return SnapshotRef(
            provider=NAME, id=reference, sandbox_id=self.id,
            metadata={"image": reference, "image_id": image_id},
        )  # fmt: skip

    async def _pause(self) -> None:
        await self._lifecycle("pause")
        self._paused = True

    async def _resume(self) -> None:
        await self._lifecycle("unpause")
        self._paused = False

    async def _lifecycle(self, action: str) -> None:
        try:
            await self._call(lambda api: getattr(api, action)(self.container_id))
        except docker_errors.APIError as exc:
            text = api_error_text(exc).lower()
            if "already paused" in text or "is not paused" in text:
                return
            if "not running" in text:
                raise self._gone("its container is not running") from None
            raise ProviderError(NAME, f"{action} of {self.id} failed: {api_error_text(exc)}") from exc

    def _describe(self, state: str, ports: dict[int, str] | None = None) -> SandboxInfo:
        return SandboxInfo(
            id=self.id,
            provider=NAME,
            state=state,  # type: ignore[arg-type]
            created_at=self.created,
            labels=self.spec.labels,
            image=self.spec.image,
            workdir=self.spec.workdir,
            isolation=self.options.runtime or "container",
            network=self.spec.network.mode,
            ports=ports or {},
        )

    async def _info(self) -> SandboxInfo:
        if self._terminated:
            return self._describe("terminated")
        try:
            data = await self._engine.call(lambda api: api.inspect_container(self.container_id))
        except docker_errors.NotFound:
            self._terminated = True
            return self._describe("terminated")
        state = data.get("State") or {}
        if not state.get("Running"):
            return self._describe("terminated")
        ports = published_ports((data.get("NetworkSettings") or {}).get("Ports") or {})
        return self._describe("paused" if state.get("Paused") else "running", ports)

    async def _terminate(self) -> None:
        self._removed_here = True
        await self._session.close()
        await self._user_session.close()

        def remove(api: Any) -> None:
            try:
                api.remove_container(self.container_id, force=True, v=True)
            except docker_errors.NotFound:
                pass
            except docker_errors.APIError as exc:
                if "already in progress" not in api_error_text(exc):
                    raise

        await self._engine.call(remove)


def _commit(api: Any, cid: str, conf: dict[str, Any], *, tag: str | None = None, pause: bool = True) -> str:
    """``docker commit`` without a read timeout (a big filesystem takes a while)."""
    params = {"container": cid, "repo": SNAPSHOT_REPOSITORY if tag else None, "tag": tag, "pause": pause}
    response = api._post_json(api._url("/commit"), data=conf, params=params, timeout=None)
    return str(api._result(response, json=True)["Id"])


def published_ports(ports: dict[str, Any]) -> dict[int, str]:
    """``NetworkSettings.Ports`` to ``{container port: "host:port"}`` (first binding)."""
    found = {}
    for key, bindings in ports.items():
        number, _, proto = key.partition("/")
        if proto != "tcp" or not bindings:
            continue
        binding = bindings[0]
        host = binding.get("HostIp") or "127.0.0.1"
        host = "127.0.0.1" if host == "0.0.0.0" else host
        found[int(number)] = f"{host}:{binding.get('HostPort')}"
    return found


def _existing_ancestor(api: Any, cid: str, directory: str, shown: str) -> tuple[str, list[str]]:
    """The deepest existing directory at or above ``directory`` (resolved), and the names
    below it that are missing. Raises ``NotADirectoryError`` if a file is in the way."""
    missing: list[str] = []
    current = directory
    while True:
        real, found = files.resolve(api, cid, current)
        if found is not None:
            if found.type != "dir":
                raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), shown)
            return real, list(reversed(missing))
        if real != current:  # a dangling symlink: create its target instead
            current = real
            continue
        if current in ("/", ""):
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), shown)
        current, name = posixpath.split(current.rstrip("/"))
        missing.append(name)
        current = current or "/"


def _raise_for_helper(result: HelperResult, path: str) -> None:
    code = result.exit_code
    if code == 0:
        return
    message = result.stderr_text.strip()
    lowered = message.lower()
    if code == 2:
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), path)
    if code == 20:
        raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), path)
    if code == 39:
        raise IsADirectoryError(errno.ENOTEMPTY, "directory not empty; pass recursive=True", path)
    if code == 13 or "permission denied" in lowered or "not permitted" in lowered:
        raise PermissionError(errno.EACCES, message or os.strerror(errno.EACCES), path)
    if "read-only" in lowered or "resource busy" in lowered:
        raise PermissionError(errno.EROFS, message, path)
    raise ProviderError(NAME, f"{path}: {message or f'helper exited with {code}'}")


def resolve_owner(api: Any, cid: str, user: str) -> Owner:
    """Numeric uid/gid for a Docker ``user`` string (``name``, ``uid``, ``name:group``)."""
    name, group = parse_user(user)
    if not name or (name in ("root", "0") and group is None):
        return Owner(0, 0)

    def table(path: str) -> list[list[str]]:
        try:
            text = files.get_file(api, cid, path, 16 * 1024 * 1024).decode("utf-8", "replace")
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return []
        return [line.split(":") for line in text.splitlines() if line and not line.startswith("#")]

    uid = gid = None
    if name.isdigit():
        uid = int(name)
    for row in table("/etc/passwd") if not name.isdigit() or group is None else []:
        if len(row) >= 4 and (row[0] == name or (name.isdigit() and row[2] == name)):
            uid, gid = int(row[2]), int(row[3])
            break
    if uid is None:
        raise ProviderError(NAME, f"user {name!r} does not exist in the image (no entry in /etc/passwd)")
    if group is not None:
        if group.isdigit():
            gid = int(group)
        else:
            gid = next((int(row[2]) for row in table("/etc/group") if len(row) >= 3 and row[0] == group), None)
            if gid is None:
                raise ProviderError(NAME, f"group {group!r} does not exist in the image (no entry in /etc/group)")
    return Owner(uid, gid if gid is not None else uid)
