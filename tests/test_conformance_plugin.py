"""The conformance suite's own machinery: strict xfails, capability skips, an inert plugin."""

from __future__ import annotations

import pytest

from sandport.local.isolation import bwrap_problem

pytest_plugins = ["pytester"]
pytestmark = pytest.mark.skipif(bool(bwrap_problem()), reason=f"local isolation unavailable: {bwrap_problem()}")

SUITE = """
import shutil
import tempfile
from typing import ClassVar
import pytest
from sandport.capabilities import Capability
from sandport.local import LocalProvider
from sandport.testing import ProviderConformance


class Limited(LocalProvider):
    capabilities = LocalProvider.capabilities - {{Capability.SHELL}}


class TestSuite(ProviderConformance):
    provider_name = "local"
    spec: ClassVar[dict] = {spec}
    xfail: ClassVar[dict] = {xfail}

    @pytest.fixture(autouse=True)
    def _root(self):
        # Not under pytester's 0700 directories: the sandbox user must traverse to it.
        self.root = tempfile.mkdtemp(prefix="sandport-conformance-")
        yield
        shutil.rmtree(self.root, ignore_errors=True)

    def make_provider(self):
        return {provider}(root=self.root)
"""


def write_suite(
    pytester: pytest.Pytester, *, spec: str = "{}", xfail: str = "{}", provider: str = "LocalProvider"
) -> None:
    pytester.makepyfile(test_suite=SUITE.format(spec=spec, xfail=xfail, provider=provider))


def test_plugin_is_inert(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_plain="def test_one():\n    assert True\n")
    pytester.makeconftest(
        "import sys\ndef pytest_sessionfinish():\n    assert 'sandport.testing.suite' not in sys.modules\n"
    )
    pytester.runpytest_subprocess("-p", "no:cacheprovider").assert_outcomes(passed=1)


def test_xfail_entries_are_strict(pytester: pytest.Pytester) -> None:
    write_suite(pytester, xfail='{"test_stdout_and_stderr_kept_apart": "known", "test_exit_code[42]": "known"}')
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-k", "stdout_and_stderr or test_exit_code", "-rX")
    result.stdout.fnmatch_lines(["*XPASS(strict)*local: known*"])
    outcomes = result.parseoutcomes()
    assert outcomes["failed"] == 2, "a passing check listed in xfail must fail (strict)"
    assert outcomes["passed"] >= 2, "checks not listed in xfail are unaffected"


def test_unknown_xfail_name_is_an_error(pytester: pytest.Pytester) -> None:
    write_suite(pytester, xfail='{"test_no_such_check": "typo"}')
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-k", "exit_code")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*xfail names checks that do not exist: test_no_such_check*"])


def test_missing_capability_skips_and_is_refused(pytester: pytest.Pytester) -> None:
    write_suite(pytester, provider="Limited")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-k", "shell", "-rs")
    result.stdout.fnmatch_lines(["*lacks capability shell*"])
    outcomes = result.parseoutcomes()
    assert outcomes["skipped"] >= 10
    assert outcomes["passed"] >= 1  # test_missing_capability_refused[shell] runs instead
    assert "failed" not in outcomes


def test_failures_show_compared_values(pytester: pytest.Pytester) -> None:
    write_suite(pytester, spec='{"max_output_bytes": 100}')
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-k", "large_output_intact")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*assert 100 == *"])
