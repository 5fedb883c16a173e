"""The ``sandport`` command line: one typer app, one function per command.

Each command parses its options, then runs async code with ``anyio.run``. Errors become one
line on stderr and an exit code (:mod:`sandport.cli.errors`); ``--json`` switches stdout to
machine-readable output.
"""

from __future__ import annotations

import sys
import warnings
from datetime import timedelta
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import anyio
import typer

import sandport
from sandport.cli import discovery, output, transfer
from sandport.cli.errors import EXIT_CODES_HELP, NOT_FOUND, OK, guarded, report
from sandport.cli.interactive import run_shell
from sandport.cli.options import JsonOpt, ProviderOpt, parse_duration, parse_env, parse_pairs
from sandport.cli.streaming import interruptible, stream_command, terminal_sink
from sandport.errors import SandboxGone, SandboxNotFound
from sandport.models import ExecResult, SnapshotRef
from sandport.provider import LABEL_KEEP, LABEL_OWNER, Provider, current_owner

__all__ = ["app"]

app = typer.Typer(
    name="sandport",
    epilog=EXIT_CODES_HELP,
    rich_markup_mode="markdown",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


class Network(StrEnum):
    none = "none"
    open = "open"


TimeoutOpt = Annotated[
    str | None,
    typer.Option(
        "--timeout", "-t", metavar="DURATION", help="Kill the command after this long (90, 30s, 5m, 1h); exit code 124."
    ),
]
EnvOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--env",
        "-e",
        metavar="K=V",
        help="Environment variable for the command; a bare NAME copies it from your environment.",
    ),
]
CmdArg = Annotated[list[str], typer.Argument(metavar="CMD", help="The command and its arguments (an argv).")]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"sandport {sandport.__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version and exit.")
    ] = False,
) -> None:
    """Run commands in sandboxes on any provider: local (bubblewrap), Docker, Modal, Daytona, ...

    The default provider is **local**; choose another with --provider or SANDPORT_PROVIDER.
    """


def _hint(provider: Provider, command: str) -> str:
    flag = "" if provider.name == "local" else f" --provider {provider.name}"
    return f"sandport {command}{flag}"


def _finish(result: ExecResult, timeout: float | None, as_json: bool, **extra: Any) -> int:
    if result.timed_out:
        output.error(f"command timed out after {timeout:g}s and was killed")
    if as_json:
        output.emit_json(output.exec_result_json(result, **extra))
    return result.exit_code


# -- run / exec / shell ---------------------------------------------------------------------


@app.command(context_settings={"allow_interspersed_args": False})
@guarded
def run(
    cmd: CmdArg,
    provider: ProviderOpt = "local",
    image: Annotated[str | None, typer.Option(metavar="IMAGE", help="Image (providers with images).")] = None,
    network: Annotated[Network, typer.Option(help="Outbound network: none (default) or open.")] = Network.none,
    env: EnvOpt = None,
    secret: Annotated[
        list[str] | None,
        typer.Option(
            "--secret",
            "-s",
            metavar="K=V",
            help="Like --env, but never logged or audited. Prefer a bare NAME (value from your env).",
        ),
    ] = None,
    workdir: Annotated[str | None, typer.Option(metavar="DIR", help="Working directory (default /workspace).")] = None,
    timeout: TimeoutOpt = None,
    keep: Annotated[bool, typer.Option("--keep", help="Keep the sandbox afterwards; its id goes to stderr.")] = False,
    no_isolation: Annotated[
        bool,
        typer.Option(
            "--no-isolation",
            help="local provider: run UNCONFINED on this host (explicit opt-out; needs --network open).",
        ),
    ] = False,
    label: Annotated[list[str] | None, typer.Option("--label", "-l", metavar="K=V", help="Label the sandbox.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Create a sandbox, run CMD in it with output streamed live, then terminate it.

    Exits with the command's own exit code (124 on timeout). CMD is an argv: each argument
    reaches the program as given, spaces included, and is never re-split. For shell syntax
    (pipes, &&, globs, redirections) run a shell:

        sandport run -- sh -c 'ls /workspace | wc -l'

    Options go before CMD; everything after CMD (or after --) belongs to the command. Your
    stdin is forwarded to the command when it is a pipe or a file (not a terminal). Ctrl-C
    kills the command and still removes the sandbox. With --json the output is collected
    and printed as one JSON object instead of streamed.
    """
    env_vars = parse_env(env, option="--env")
    secrets = parse_env(secret, option="--secret")
    labels = parse_pairs(label, option="--label")
    limit = parse_duration(timeout, option="--timeout") if timeout is not None else None
    if keep:
        labels[LABEL_KEEP] = "1"
    fields: dict[str, Any] = {"network": network.value, "env": env_vars, "secrets": secrets, "labels": labels}
    if image is not None:
        fields["image"] = image
    if workdir is not None:
        fields["workdir"] = workdir
    backend = sandport.get_provider(provider)
    if no_isolation:
        if "isolation" not in backend.Config.model_fields:
            raise typer.BadParameter(
                f"the {backend.name} provider has no isolation to turn off", param_hint="--no-isolation"
            )
        if network is not Network.open:
            raise typer.BadParameter(
                "an unconfined command cannot be kept off the network; add --network open", param_hint="--no-isolation"
            )
        fields["options"] = {"isolation": "none"}
        output.warn("--no-isolation: the command runs UNCONFINED on this host, with your user's access")
    spec = sandport.SandboxSpec(**fields)

    async def body() -> tuple[ExecResult, str]:
        async with backend:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*run UNCONFINED")  # we warned above
                sandbox = await backend.create(spec)
            try:
                result = await stream_command(sandbox, cmd, timeout=limit, sink=None if as_json else terminal_sink)
            finally:
                with anyio.CancelScope(shield=True):
                    if keep:
                        output.note(f"kept sandbox {sandbox.id} (remove it with: {_hint(backend, 'rm')} {sandbox.id})")
                    else:
                        await sandbox.terminate()
            return result, sandbox.id

    result, sandbox_id = anyio.run(interruptible, body)
    extra = {"sandbox_id": sandbox_id, "provider": backend.name, "kept": keep}
    raise typer.Exit(_finish(result, limit, as_json, **extra))


@app.command(name="exec")
@guarded
def exec_(
    sandbox_id: Annotated[str, typer.Argument(metavar="ID", help="The sandbox (see `sandport ls`).")],
    cmd: CmdArg,
    provider: ProviderOpt = "local",
    timeout: TimeoutOpt = None,
    env: EnvOpt = None,
    cwd: Annotated[str | None, typer.Option(metavar="DIR", help="Working directory (default: the workdir).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Run CMD in an existing sandbox, output streamed live; exits with its exit code.

    Put -- before CMD when it has options of its own: sandport exec ID -- ls -la
    """
    env_vars = parse_env(env, option="--env")
    limit = parse_duration(timeout, option="--timeout") if timeout is not None else None
    backend = sandport.get_provider(provider)

    async def body() -> ExecResult:
        async with backend:
            sandbox = await backend.connect(sandbox_id)
            sink = None if as_json else terminal_sink
            return await stream_command(sandbox, cmd, cwd=cwd, env=env_vars, timeout=limit, sink=sink)

    result = anyio.run(interruptible, body)
    raise typer.Exit(_finish(result, limit, as_json, sandbox_id=sandbox_id, provider=backend.name))


@app.command()
@guarded
def shell(
    sandbox_id: Annotated[str, typer.Argument(metavar="ID", help="The sandbox (see `sandport ls`).")],
    provider: ProviderOpt = "local",
    timeout: Annotated[
        str | None, typer.Option("--timeout", "-t", metavar="DURATION", help="Per-command time limit.")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Interactive session on a persistent shell: cd, export and background jobs carry over.

    Reads one command per line (from the terminal, or piped in), prints its output and
    [exit N] when it fails. `exit`, `exit N` or Ctrl-D leaves. With --json each command's
    result is one JSON object per line.
    """
    limit = parse_duration(timeout, option="--timeout") if timeout is not None else None
    raise typer.Exit(run_shell(provider, sandbox_id, timeout=limit, as_json=as_json))


# -- files and snapshots --------------------------------------------------------------------


@app.command()
@guarded
def cp(
    src: Annotated[str, typer.Argument(metavar="SRC", help="Local path, or ID:path in a sandbox.")],
    dst: Annotated[str, typer.Argument(metavar="DST", help="Local path, or ID:path in a sandbox.")],
    provider: ProviderOpt = "local",
    as_json: JsonOpt = False,
) -> None:
    """Copy a file or a whole directory tree between this host and a sandbox.

    One side is ID:path (relative paths are under the sandbox's workdir), the other local.
    As with cp -r, an existing directory (or a path ending in /) as DST receives SRC under
    its own name; otherwise DST becomes the copy. Write ./name for a local path with a colon.
    """
    source, destination = transfer.parse_endpoint(src), transfer.parse_endpoint(dst)
    backend = sandport.get_provider(provider)
    progress = not as_json and output.stderr_console().is_terminal

    async def body() -> dict[str, Any]:
        async with backend:
            return await transfer.copy(backend, source, destination, progress=progress)

    copied = anyio.run(interruptible, body)
    if as_json:
        output.emit_json(copied)
    else:
        output.stdout_console().print(transfer.summary(copied), markup=False)


@app.command()
@guarded
def snapshot(
    sandbox_id: Annotated[str, typer.Argument(metavar="ID", help="The sandbox to snapshot.")],
    provider: ProviderOpt = "local",
    as_json: JsonOpt = False,
) -> None:
    """Snapshot a sandbox's filesystem and print the snapshot reference as JSON.

    Save it to restore later, from any process: sandport snapshot ID > snap.json
    """
    backend = sandport.get_provider(provider)

    async def body() -> SnapshotRef:
        async with backend:
            sandbox = await backend.connect(sandbox_id)
            return await sandbox.snapshot()

    ref = anyio.run(interruptible, body)
    output.emit_json(ref.model_dump(mode="json"))


@app.command()
@guarded
def restore(
    snapshot_file: Annotated[
        str, typer.Argument(metavar="SNAPSHOT_JSON", help="File written by `sandport snapshot`, or - for stdin.")
    ],
    provider: Annotated[
        str | None,
        typer.Option("--provider", "-p", metavar="NAME", help="Provider (default: the one named in the snapshot)."),
    ] = None,
    label: Annotated[list[str] | None, typer.Option("--label", "-l", metavar="K=V", help="Label the sandbox.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Create a new sandbox from a snapshot and print its id.

    The new sandbox is labelled sandport.keep=1 so that `sandport gc` leaves it alone;
    remove it with `sandport rm ID`.
    """
    if snapshot_file == "-":
        text = sys.stdin.read()
    else:
        path = Path(snapshot_file)
        if not path.is_file():
            raise typer.BadParameter(f"no such file: {snapshot_file}", param_hint="SNAPSHOT_JSON")
        text = path.read_text()
    ref = SnapshotRef.model_validate_json(text)
    labels = {**parse_pairs(label, option="--label"), LABEL_KEEP: "1"}
    backend = sandport.get_provider(provider or ref.provider)

    async def body() -> str:
        async with backend:
            sandbox = await backend.restore(ref, labels=labels)
            return sandbox.id

    sandbox_id = anyio.run(interruptible, body)
    if as_json:
        output.emit_json({"sandbox_id": sandbox_id, "provider": backend.name, "snapshot_id": ref.id})
    else:
        typer.echo(sandbox_id)


# -- lifecycle ------------------------------------------------------------------------------


@app.command()
@guarded
def ls(
    provider: Annotated[
        str | None,
        typer.Option("--provider", "-p", metavar="NAME", help="Only this provider (default: every usable one)."),
    ] = None,
    all_: Annotated[bool, typer.Option("--all", "-a", help="Every sandbox, not just the ones you created.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """List your sandboxes (those labelled with your user@host) on every usable provider."""
    wanted = None if all_ else {LABEL_OWNER: current_owner()}

    async def body() -> tuple[list[sandport.SandboxInfo], bool]:
        found: list[sandport.SandboxInfo] = []
        failed = False
        async with discovery.usable_providers(provider) as backends:
            for backend in backends:
                try:
                    found += await backend.list(wanted)
                except Exception as exc:
                    if provider is not None:
                        raise
                    failed = True
                    report(exc)
        return sorted(found, key=lambda i: i.created_at), failed

    infos, failed = anyio.run(interruptible, body)
    if as_json:
        output.emit_json([output.info_json(i) for i in infos])
    elif infos:
        output.stdout_console().print(output.sandbox_table(infos))
    else:
        output.stdout_console().print("No sandboxes.", style="dim")
    raise typer.Exit(1 if failed else OK)


@app.command()
@guarded
def rm(
    sandbox_ids: Annotated[list[str], typer.Argument(metavar="ID", help="Sandboxes to terminate.")],
    provider: ProviderOpt = "local",
    as_json: JsonOpt = False,
) -> None:
    """Terminate sandboxes and delete their data. An unknown id is reported (exit code 4);
    the others are still removed."""
    backend = sandport.get_provider(provider)

    async def body() -> tuple[list[str], dict[str, str]]:
        removed: list[str] = []
        missing: dict[str, str] = {}
        async with backend:
            for sandbox_id in sandbox_ids:
                try:
                    sandbox = await backend.connect(sandbox_id)
                    await sandbox.terminate()
                except (SandboxNotFound, SandboxGone) as exc:
                    missing[sandbox_id] = str(exc)
                    output.error(str(exc))
                    continue
                removed.append(sandbox_id)
        return removed, missing

    removed, missing = anyio.run(interruptible, body)
    if as_json:
        output.emit_json({"provider": backend.name, "removed": removed, "not_found": missing})
    else:
        for sandbox_id in removed:
            typer.echo(sandbox_id)
    raise typer.Exit(NOT_FOUND if missing else OK)


@app.command()
@guarded
def gc(
    provider: Annotated[
        str | None,
        typer.Option("--provider", "-p", metavar="NAME", help="Only this provider (default: every usable one)."),
    ] = None,
    older_than: Annotated[
        str, typer.Option("--older-than", metavar="DURATION", help="Only sandboxes older than this (30m, 1h, 2d).")
    ] = "0",
    include_kept: Annotated[
        bool, typer.Option("--include-kept", help="Also remove sandboxes labelled sandport.keep (run --keep).")
    ] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", "-n", help="Show what would be removed.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Remove sandboxes left behind by programs that exited without terminating them.

    Only your own sandboxes (labelled with your user@host) whose creating process is no
    longer running; those kept with `run --keep` or made by `restore` survive unless
    --include-kept.
    """
    age = timedelta(seconds=parse_duration(older_than, option="--older-than"))

    async def body() -> list[dict[str, str]]:
        removed: list[dict[str, str]] = []
        async with discovery.usable_providers(provider) as backends:
            for backend in backends:
                ids = await backend.gc(age, include_kept=include_kept, dry_run=dry_run)
                removed += [{"provider": backend.name, "id": i} for i in ids]
        return removed

    removed = anyio.run(interruptible, body)
    if as_json:
        output.emit_json({"dry_run": dry_run, "removed": removed})
        return
    verb = "would remove" if dry_run else "removed"
    for item in removed:
        typer.echo(f"{verb} {item['id']} ({item['provider']})")
    if not removed:
        output.stdout_console().print("Nothing to remove.", style="dim")


@app.command()
@guarded
def providers(as_json: JsonOpt = False) -> None:
    """List installed providers, their capabilities, and whether each is usable now."""
    statuses = anyio.run(interruptible, _probe_and_close)
    missing = discovery.not_installed()
    if as_json:
        output.emit_json(
            {
                "providers": [s.as_json() for s in statuses],
                "not_installed": [{"name": n, "package": p} for n, p in missing.items()],
            }
        )
        return
    from rich.table import Table
    from rich.text import Text

    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in ("PROVIDER", "USABLE", "CAPABILITIES", "NOTE"):
        table.add_column(column, overflow="fold")
    for s in statuses:
        name = s.name + (f" ({', '.join(s.aliases)})" if s.aliases else "")
        usable = Text("yes", style="green") if s.usable else Text("no", style="bold red")
        table.add_row(name, usable, ", ".join(s.capabilities), s.reason)
    console = output.stdout_console()
    console.print(table)
    if missing:
        hints = ", ".join(f"{n} (pip install {p})" for n, p in missing.items())
        console.print(f"Not installed: {hints}", style="dim", markup=False)


async def _probe_and_close() -> list[discovery.Status]:
    statuses = await discovery.probe_all()
    for status in statuses:
        if status.provider is not None:
            await status.provider.aclose()
            status.provider = None
    return statuses
