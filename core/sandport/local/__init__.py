"""The local provider, the embedded default: see :mod:`sandport.local.provider`."""

from sandport.local.provider import LocalConfig, LocalProvider, LocalSandbox

__all__ = ["LocalConfig", "LocalProvider", "LocalSandbox"]
