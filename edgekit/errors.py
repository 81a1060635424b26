"""Errors a user can act on.

Every mistake a user can make (a wrong path, a bad option, data of the wrong shape) is raised as an
:class:`EdgekitError` subclass whose message is one line naming the problem and the fix. The CLI prints that
line and exits non-zero without a traceback; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

__all__ = ["EdgekitError", "UsageError", "BundleError", "ConversionError", "ParityError", "BrokerRefusedError"]


class EdgekitError(Exception):
    """Base class: ``str(err)`` is the one-line message shown to the user."""

    exit_code = 2

    def __init__(self, problem: str, fix: str | None = None):
        self.problem = problem
        self.fix = fix
        super().__init__(f"{problem} — {fix}" if fix else problem)


class UsageError(EdgekitError):
    """An option, path or input file the user gave is wrong."""


class BundleError(EdgekitError):
    """A bundle is missing, malformed, or fails its hash check."""


class ConversionError(EdgekitError):
    """The model cannot be converted as asked (crossing branches, target constraints, ...)."""


class ParityError(EdgekitError):
    """The converted pipeline disagrees with the float model more than allowed (bundle still written)."""

    exit_code = 3


class BrokerRefusedError(EdgekitError):
    """The broker refused this client's TLS or credentials: retrying with the same setup cannot succeed."""

    exit_code = 5
