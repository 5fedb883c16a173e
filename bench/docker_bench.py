"""sandport's Docker adapter side by side with the raw docker SDK (and the docker CLI).

    python bench/docker_bench.py            # the full run (a few minutes)
    python bench/docker_bench.py --quick    # a short run, for a smoke test

Each row runs its candidates in one process against the same engine and image, with their
repetitions interleaved (the order shuffled every round) so that drift and noise hit every
candidate alike. It prints medians and the ratio to the raw SDK, checks each ratio against
its target, and writes everything to bench/results/docker.json.

Rows (target in brackets):
  exec        sandbox.exec("true") vs SDK exec_run("true") and `docker exec`   [<= 1.10x SDK]
  shell       one shell-session round trip vs SDK exec_run("true")            [<= 0.20x SDK]
  file-64MiB  write_file + read_file of 64 MiB vs put_archive + get_archive   [<= 1.20x SDK]
              (the raw side builds its tar with tarfile and extracts with tarfile, as
              a user of the SDK would)
  upload      upload() of a 1,000-file tree vs put_archive of the same tree    [<= 1.30x SDK]
              as a tar built beforehand (sandport builds its tar while sending)
  create      create() + first exec vs containers.run() + exec_run()          [<= 1.20x SDK]
  parallel    16 sandboxes x 50 execs at once vs the same 800 execs one by    [>= 4x throughput]
              one (sandport both times; the SDK's own speed-up with 16 threads is
              shown for reference: on a small machine the engine is the limit)
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import anyio
import docker

import sandport
from sandport_docker import DockerProvider, DockerSandbox

IMAGE = os.environ.get("SANDPORT_BENCH_IMAGE", "sandport-test/debian:bookworm")
LABELS = {"sandport-bench": "1"}
RESULTS = Path(__file__).parent / "results" / "docker.json"
MiB = 1024 * 1024

Timed = Callable[[], Awaitable[None]]


async def timeit(fn: Timed) -> float:
    started = time.perf_counter()
    await fn()
    return time.perf_counter() - started


async def interleave(candidates: dict[str, Timed], rounds: int, warmup: int = 1) -> dict[str, list[float]]:
    """Run every candidate once per round, in a shuffled order; return the timings."""
    times: dict[str, list[float]] = {name: [] for name in candidates}
    order = list(candidates)
    for i in range(warmup + rounds):
        random.shuffle(order)
        for name in order:
            elapsed = await timeit(candidates[name])
            if i >= warmup:
                times[name].append(elapsed)
    return times


def sync(fn: Callable[[], Any]) -> Timed:
    """Wrap a blocking call as a candidate (it runs on the event loop's thread on purpose:
    nothing else runs meanwhile, and no thread hop is added to the raw side)."""

    async def run() -> None:
        fn()

    return run


def med(values: list[float]) -> float:
    return statistics.median(values)


class Bench:
    def __init__(self, quick: bool) -> None:
        self.quick = quick
        self.client = docker.from_env(version="auto", max_pool_size=32)
        self.api = self.client.api
        self.provider = DockerProvider()
        self.rows: list[dict[str, Any]] = []

    def row(
        self,
        name: str,
        what: str,
        times: dict[str, list[float]],
        ours: str,
        raw: str,
        target: float,
        *,
        higher_is_better: bool = False,
        unit: str = "ms",
    ) -> None:
        medians = {k: med(v) for k, v in times.items()}
        ratio = medians[ours] / medians[raw]
        met = ratio >= target if higher_is_better else ratio <= target
        self.rows.append({
            "row": name, "what": what, "candidates": {k: {"median": medians[k], "runs": len(v), "all": v}
                                                       for k, v in times.items()},
            "ours": ours, "baseline": raw, "ratio": ratio, "target": target,
            "target_kind": ">=" if higher_is_better else "<=", "met": met, "unit": unit,
        })  # fmt: skip

    async def sandbox(self, **fields: Any) -> DockerSandbox:
        sandbox = await self.provider.create(image=IMAGE, labels=LABELS, **fields)
        assert isinstance(sandbox, DockerSandbox)
        return sandbox

    # -- rows ----------------------------------------------------------------------------

    async def exec_row(self) -> None:
        sandbox = await self.sandbox()
        container = self.client.containers.get(sandbox.container_id)
        try:

            async def ours() -> None:
                assert (await sandbox.exec("true")).exit_code == 0

            def raw() -> None:
                assert container.exec_run("true").exit_code == 0

            def cli() -> None:
                subprocess.run(["docker", "exec", sandbox.container_id, "true"], check=True)

            rounds = 15 if self.quick else 60
            times = await interleave({"sandport exec": ours, "SDK exec_run": sync(raw), "docker exec CLI": sync(cli)},
                                     rounds, warmup=3)  # fmt: skip
            self.row("exec", 'sandbox.exec("true")', times, "sandport exec", "SDK exec_run", 1.10)

            shell = await sandbox.open_shell()

            async def shell_run() -> None:
                assert (await shell.run("true")).exit_code == 0

            times = await interleave({"shell round trip": shell_run, "SDK exec_run": sync(raw)}, rounds, warmup=3)
            await shell.close()
            self.row("shell", "shell session round trip", times, "shell round trip", "SDK exec_run", 0.20)
        finally:
            await sandbox.terminate()

    async def file_row(self) -> None:
        sandbox = await self.sandbox()
        payload = os.urandom(64 * MiB)
        try:

            async def ours() -> None:
                await sandbox.write_file("/workspace/big.bin", payload)
                assert len(await sandbox.read_file("/workspace/big.bin")) == len(payload)

            def raw() -> None:
                buffer = io.BytesIO()
                with tarfile.open(fileobj=buffer, mode="w") as tar:
                    info = tarfile.TarInfo("raw.bin")
                    info.size = len(payload)
                    tar.addfile(info, io.BytesIO(payload))
                assert self.api.put_archive(sandbox.container_id, "/workspace", buffer.getvalue())
                chunks, _ = self.api.get_archive(sandbox.container_id, "/workspace/raw.bin")
                with tarfile.open(fileobj=io.BytesIO(b"".join(chunks))) as tar:
                    member = tar.next()
                    assert member is not None
                    extracted = tar.extractfile(member)
                    assert extracted is not None and len(extracted.read()) == len(payload)

            rounds = 4 if self.quick else 15
            times = await interleave({"sandport write+read": ours, "SDK put+get_archive": sync(raw)}, rounds)
            self.row("file-64MiB", "write_file + read_file, 64 MiB", times, "sandport write+read",
                     "SDK put+get_archive", 1.20)  # fmt: skip
        finally:
            await sandbox.terminate()

    async def upload_row(self, tree: Path) -> None:
        sandbox = await self.sandbox()
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as tar:
            tar.add(tree, arcname="tree")
        prebuilt = buffer.getvalue()
        rounds = 5 if self.quick else 20
        counter = {"ours": 0, "raw": 0}
        try:
            await sandbox.mkdir("/workspace/up")
            for i in range(rounds + 1):  # the raw side's fresh target directories
                await sandbox.mkdir(f"/workspace/up/raw-{i}")

            async def ours() -> None:
                counter["ours"] += 1
                await sandbox.upload(tree, f"/workspace/up/ours-{counter['ours']}")

            def raw() -> None:
                assert self.api.put_archive(sandbox.container_id, f"/workspace/up/raw-{counter['raw']}", prebuilt)
                counter["raw"] += 1

            times = await interleave({"sandport upload": ours, "SDK put_archive (prebuilt tar)": sync(raw)}, rounds)
            check = await sandbox.exec("for d in ours-1 raw-0; do find /workspace/up/$d -type f | wc -l; done")
            assert check.text.split() == ["1000", "1000"], check.text
            self.row("upload", "upload of a 1,000-file tree", times, "sandport upload",
                     "SDK put_archive (prebuilt tar)", 1.30)  # fmt: skip
        finally:
            await sandbox.terminate()

    async def create_row(self) -> None:
        made: list[DockerSandbox] = []
        raw_made: list[Any] = []

        async def ours() -> None:
            sandbox = await self.sandbox()
            made.append(sandbox)
            assert (await sandbox.exec("true")).exit_code == 0

        def raw() -> None:
            container = self.client.containers.run(IMAGE, ["sleep", "infinity"], detach=True, labels=LABELS)
            raw_made.append(container)
            assert container.exec_run("true").exit_code == 0

        async def cleanup() -> None:
            while made:
                await made.pop().terminate()
            while raw_made:
                raw_made.pop().remove(force=True)

        rounds = 4 if self.quick else 15
        times: dict[str, list[float]] = {"sandport create+exec": [], "SDK run+exec_run": []}
        order = list(times)
        for i in range(rounds + 1):
            random.shuffle(order)
            for name in order:
                elapsed = await timeit(ours if name.startswith("sandport") else sync(raw))
                await cleanup()
                if i:
                    times[name].append(elapsed)
        self.row("create", "create to first exec", times, "sandport create+exec", "SDK run+exec_run", 1.20)

    async def parallel_row(self) -> None:
        count, per = (16, 10) if self.quick else (16, 50)
        sandboxes = [await self.sandbox() for _ in range(count)]
        containers = [self.client.containers.get(sandbox.container_id) for sandbox in sandboxes]
        try:
            for sandbox in sandboxes:  # warm up
                await sandbox.exec("true")

            async def sequential() -> None:
                for i in range(count * per):
                    assert (await sandboxes[i % count].exec("true")).exit_code == 0

            async def concurrent() -> None:
                async def worker(sandbox: DockerSandbox) -> None:
                    for _ in range(per):
                        assert (await sandbox.exec("true")).exit_code == 0

                async with anyio.create_task_group() as tg:
                    for sandbox in sandboxes:
                        tg.start_soon(worker, sandbox)

            def raw_sequential() -> None:
                for i in range(count * per):
                    assert containers[i % count].exec_run("true").exit_code == 0

            def raw_concurrent() -> None:  # the engine's own ceiling, for reference
                def worker(container: Any) -> None:
                    for _ in range(per):
                        assert container.exec_run("true").exit_code == 0

                with ThreadPoolExecutor(count) as pool:
                    list(pool.map(worker, containers))

            rounds = 1 if self.quick else 2
            times = await interleave(
                {"sandport sequential": sequential, "sandport concurrent": concurrent,
                 "SDK sequential": sync(raw_sequential), "SDK 16 threads": sync(raw_concurrent)},
                rounds, warmup=0,
            )  # fmt: skip
            total = count * per
            throughput = {k: [total / t for t in v] for k, v in times.items()}
            self.row(
                "parallel", f"{count} sandboxes x {per} execs at once vs one by one (execs/s)", throughput,
                "sandport concurrent", "sandport sequential", 4.0, higher_is_better=True, unit="execs/s",
            )  # fmt: skip
            self.rows[-1]["reference"] = {
                "SDK speed-up, 16 threads vs sequential": med(throughput["SDK 16 threads"])
                / med(throughput["SDK sequential"])
            }
        finally:
            for sandbox in sandboxes:
                await sandbox.terminate()

    # -- running -------------------------------------------------------------------------

    async def run(self, only: set[str] | None) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            tree = Path(tmp) / "tree"
            for i in range(1000):
                path = tree / f"d{i % 20:02d}" / f"s{i % 7}" / f"f{i:04d}.txt"
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(os.urandom(512 + (i * 37) % 3000))
            steps: dict[str, Callable[[], Awaitable[None]]] = {
                "exec": self.exec_row, "file": self.file_row, "upload": lambda: self.upload_row(tree),
                "create": self.create_row, "parallel": self.parallel_row,
            }  # fmt: skip
            try:
                for name, step in steps.items():
                    if only is None or name in only:
                        print(f"running {name} ...", file=sys.stderr, flush=True)
                        await step()
            finally:
                await self.provider.aclose()
                self.client.close()


def report(rows: list[dict[str, Any]], quick: bool) -> None:
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:  # plain text
        for row in rows:
            print(row["row"], row["what"], f"ratio {row['ratio']:.3f} target {row['target_kind']} {row['target']}")
        return
    table = Table(title=f"sandport docker vs raw SDK{' (quick)' if quick else ''}: medians")
    for column in ("row", "candidate", "median", "ratio", "target", "met"):
        table.add_column(column, justify="right" if column in ("median", "ratio") else "left")
    for row in rows:
        first = True
        for name, data in row["candidates"].items():
            value = data["median"]
            shown = f"{value * 1000:.1f} ms" if row["unit"] == "ms" else f"{value:.1f} {row['unit']}"
            mine = name == row["ours"]
            table.add_row(
                row["row"] if first else "",
                name,
                shown,
                f"{row['ratio']:.3f}x" if mine else "",
                f"{row['target_kind']} {row['target']}x" if mine else "",
                ("[green]yes[/]" if row["met"] else "[red]no[/]") if mine else "",
            )
            first = False
        for label, value in row.get("reference", {}).items():
            table.add_row("", f"({label})", "", f"{value:.3f}x", "", "")
        table.add_section()
    Console().print(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (a smoke run)")
    parser.add_argument("--only", action="append", choices=["exec", "file", "upload", "create", "parallel"],
                        help="run only this row (repeatable)")  # fmt: skip
    args = parser.parse_args()
    availability = anyio.run(DockerProvider().check)
    if not availability.usable:
        sys.exit(f"docker bench: {availability.reason}")
    bench = Bench(args.quick)
    anyio.run(bench.run, set(args.only) if args.only else None)
    report(bench.rows, args.quick)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    engine = docker.from_env(version="auto").version()
    RESULTS.write_text(json.dumps({
        "quick": args.quick, "image": IMAGE, "engine": engine.get("Version"), "api": engine.get("ApiVersion"),
        "python": platform.python_version(), "sandport": sandport.__version__, "cpus": os.cpu_count(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "rows": bench.rows,
    }, indent=2))  # fmt: skip
    print(f"results written to {RESULTS}")


if __name__ == "__main__":
    main()
