"""Local provider exec overhead, side by side with what it wraps.

Each round runs the same command once per candidate, in rotating order, so machine noise
hits all candidates alike; the report gives medians and ratios of medians:

- ``subprocess``: ``subprocess.run(argv)`` on the host, unconfined (the floor);
- ``bwrap``: ``subprocess.run`` of bwrap with the same namespaces and mounts sandport uses;
- ``sandport``: ``await sandbox.exec(argv)`` on the local provider (async API);
- ``sandport-sync``: ``sandbox.exec(argv)`` through the blocking facade.

Usage: ``python bench/local_bench.py [--rounds N] [--quick]``; JSON goes to
``bench/results/local.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from anyio.from_thread import start_blocking_portal

import sandport
from sandport.local import LocalProvider
from sandport.local.isolation import bwrap_command

# Absolute paths, so that every candidate runs the very same binary.
COMMANDS = {"true": ["/usr/bin/true"], "python3 -c pass": ["/usr/bin/python3", "-c", "pass"]}


def measure(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--quick", action="store_true", help="30 rounds")
    args = parser.parse_args()
    rounds = 30 if args.quick else args.rounds

    with tempfile.TemporaryDirectory() as root, start_blocking_portal() as portal:
        provider = LocalProvider(root=Path(root))
        sandbox = portal.call(provider.create)
        sync_sandbox = sandport.SyncProvider(provider).create()
        assert isinstance(sandbox, sandport.Sandbox)
        mounts = sandbox._mounts  # type: ignore[attr-defined]
        report: dict[str, dict[str, float]] = {}
        for label, argv in COMMANDS.items():
            raw_bwrap = bwrap_command(mounts, network=False, cwd="/workspace", argv=argv)
            candidates: dict[str, Callable[[], object]] = {
                "subprocess": lambda argv=argv: subprocess.run(argv, capture_output=True, check=True),
                "bwrap": lambda cmd=raw_bwrap: subprocess.run(cmd, capture_output=True, check=True),
                "sandport": lambda argv=argv: portal.call(sandbox.exec, argv),
                "sandport-sync": lambda argv=argv: sync_sandbox.exec(argv),
            }
            times: dict[str, list[float]] = {name: [] for name in candidates}
            for fn in candidates.values():  # warm up
                fn()
            names = list(candidates)
            for i in range(rounds):
                for name in names[i % len(names) :] + names[: i % len(names)]:
                    times[name].append(measure(candidates[name]))
            medians = {name: statistics.median(values) for name, values in times.items()}
            report[label] = medians
            print(f"\n{label!r}: {rounds} rounds, median ms (ratio vs subprocess / vs bwrap)")
            for name, median in medians.items():
                print(
                    f"  {name:14s} {median * 1000:8.2f} ms   "
                    f"{median / medians['subprocess']:6.2f}x   {median / medians['bwrap']:6.2f}x"
                )
        sync_sandbox.close()
        portal.call(sandbox.terminate)
    out = Path(__file__).parent / "results" / "local.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"rounds": rounds, "median_seconds": report}, indent=2))
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
