"""User-facing errors.

Every mistake a user can make (bad file, bad value, wrong dimension) raises :class:`SemidError` with one
line that names the file, row and value. The CLI prints it as ``Error: <message>`` and exits non-zero;
library callers can catch it (it is a ``ValueError``).
"""

from __future__ import annotations

from collections.abc import Iterable


class SemidError(ValueError):
    """A user mistake, explained in one line."""


class NotFittedError(SemidError, AttributeError):
    """An estimator was used before ``fit``."""


def first_line(e: BaseException) -> str:
    """The first non-blank line of an exception's text (libraries often write several), or its type name."""
    return next((line.strip() for line in str(e).splitlines() if line.strip()), type(e).__name__)


def shortlist(names: Iterable[str], shown: int = 5) -> str:
    """The first ``shown`` names, then how many in all: a message about 300 files stays one short line."""
    names = list(names)
    more = f", ... ({len(names)} in all)" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more
