"""Sessions for linting, type checking, tests and benchmarks.

``nox`` runs the default sessions: lint, typecheck, tests and the live conformance lanes
(local and docker). The docker lane starts a Docker engine and builds the offline test
images first (scripts/docker-engine.sh, scripts/build-test-images.sh; both reuse what is
already there), so a lane whose prerequisite is missing fails loudly instead of skipping.
Posargs go to pytest: ``nox -s "conformance(local)" -- -k exec -x``.
"""

from __future__ import annotations

import os
import shutil

import nox

nox.options.sessions = ["lint", "typecheck", "tests", "conformance"]
nox.options.reuse_existing_virtualenvs = True

PYTHON = "3.11"
ADAPTERS = {"docker": "adapters/docker"}
LIVE_PROVIDERS = ["local", "docker"]
CONFORMANCE_TESTS = {"local": "tests/test_conformance_local.py", "docker": "tests/docker"}


def _install(session: nox.Session, *adapters: str) -> None:
    session.install("-e", ".[test]")
    for name in adapters:
        session.install("-e", ADAPTERS[name])


def _require_bwrap(session: nox.Session) -> None:
    if shutil.which("bwrap") is None:
        session.error("bubblewrap is missing: run `apt-get install -y bubblewrap` (as root) first")


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """Ruff lint and format check over everything."""
    session.install("ruff")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session(python=PYTHON)
def typecheck(session: nox.Session) -> None:
    """mypy --strict over the core and the adapters."""
    _install(session, *ADAPTERS)
    session.install("mypy", "types-requests")
    session.run("mypy")
    for path in ADAPTERS.values():
        session.run("mypy", path)


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """Core unit tests and CLI tests (on the real local provider)."""
    _require_bwrap(session)
    _install(session)
    ignore = [f"--ignore={path}" for path in CONFORMANCE_TESTS.values()]
    session.run("pytest", "tests", *ignore, *session.posargs, env={"SANDPORT_AUDIT_LOG": "off"})


@nox.session(python=PYTHON)
@nox.parametrize("provider", LIVE_PROVIDERS, ids=LIVE_PROVIDERS)
def conformance(session: nox.Session, provider: str) -> None:
    """The conformance suite, live, against one provider."""
    if provider == "local":
        _require_bwrap(session)
        _install(session)
    else:
        session.run("bash", "scripts/docker-engine.sh", external=True)
        session.run("bash", "scripts/build-test-images.sh", external=True)
        _install(session, provider)
    session.run("pytest", CONFORMANCE_TESTS[provider], "-ra", *session.posargs, env={"SANDPORT_AUDIT_LOG": "off"})


@nox.session(python=PYTHON, default=False)
def bench(session: nox.Session) -> None:
    """Side-by-side benchmarks (bench/); pass --quick for a short run."""
    _install(session, *ADAPTERS)
    session.run("python", "bench/local_bench.py", *session.posargs)
    if os.path.exists("bench/docker_bench.py"):
        session.run("bash", "scripts/docker-engine.sh", external=True)
        session.run("bash", "scripts/build-test-images.sh", external=True)
        session.run("python", "bench/docker_bench.py", *session.posargs)
