"""The whole suite: every check mixin combined into :class:`ProviderConformance`."""

from __future__ import annotations

from sandport.testing.checks_audit import AuditChecks
from sandport.testing.checks_capabilities import CapabilityChecks
from sandport.testing.checks_escape import EscapeChecks
from sandport.testing.checks_exec import ExecChecks
from sandport.testing.checks_files import FileChecks
from sandport.testing.checks_hostile import HostileChecks
from sandport.testing.checks_lifecycle import LifecycleChecks
from sandport.testing.checks_network import NetworkChecks
from sandport.testing.checks_shell import ShellChecks
from sandport.testing.checks_snapshot import SnapshotChecks
from sandport.testing.checks_stream import StreamChecks
from sandport.testing.checks_timeout import TimeoutChecks
from sandport.testing.checks_transfer import TransferChecks

__all__ = ["ProviderConformance"]


class ProviderConformance(
    ExecChecks,
    TimeoutChecks,
    StreamChecks,
    ShellChecks,
    FileChecks,
    TransferChecks,
    EscapeChecks,
    HostileChecks,
    SnapshotChecks,
    LifecycleChecks,
    NetworkChecks,
    AuditChecks,
    CapabilityChecks,
):
    """Every check of the contract, for one provider.

    Class settings (override in the subclass):

    - ``provider_name``: the registry name; ``make_provider()`` builds it by default.
    - ``make_provider()``: return a new provider instance (called per check, and again
      where a check needs a second instance, as a later process would have).
    - ``spec``: extra :class:`~sandport.models.SandboxSpec` fields for every sandbox.
    - ``xfail``: ``{"test_name": "reason"}`` (or ``"test_name[param]"``) for known
      deviations; each becomes a strict xfail, so a fixed deviation fails loudly.
    - ``host_address()``: the test host's address as seen from a sandbox with an open
      network (default ``127.0.0.1``); the network checks' TCP server binds there.
    - ``slack``: seconds added to every upper bound on a duration (default 30).

    Checks needing a capability the provider does not declare are skipped, naming it;
    checks that an undeclared capability is refused run instead.

    Assumptions about the sandbox: ``/bin/sh`` and ``python3`` on ``PATH``, plus the usual
    POSIX tools (``cat``, ``ln``, ``stat -c``, ``wc``, ``printenv``, ``sleep``, ``sort``);
    the default workdir is writable and ``/tmp`` exists and is writable. The checks create
    files only in the sandbox and in pytest's ``tmp_path``, and open network connections
    only to a server they start on ``host_address()``.
    """
