"""What a handler raises, and what that means for its (event, handler) pair.

- `TransientError`: try again later (timeouts, connection errors, 408/425/429/5xx).
- `PermanentError`: retrying cannot help (other 4xx, a bad payload); dead-letter at once.
Any other exception from a handler counts as transient: a bug in a user's
callable should not lose the event, and after the last attempt it is a dead
letter an operator can replay once the bug is fixed.
"""

from __future__ import annotations


class HandlerError(Exception):
    """Base of the typed handler failures; `status` is the downstream HTTP status, if any."""

    permanent = False

    def __init__(self, message: str, *, status: int | None = None, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


class TransientError(HandlerError):
    permanent = False


class PermanentError(HandlerError):
    permanent = True


class NormalizeFailed(PermanentError):
    """The delivery cannot become a canonical event; dead-lettered at stage `normalize`."""


def is_permanent(exc: BaseException) -> bool:
    return isinstance(exc, HandlerError) and exc.permanent
