"""When and how long to wait before trying a call again.

Exponential backoff with full jitter (a random delay between zero and the exponential bound),
which spreads the retries of many agents hitting the same overloaded gateway instead of
synchronising them. ``Retry-After`` from the gateway wins over the computed delay; a longer wait
than ``max_retry_after`` is not slept through: the error is raised for the caller to decide.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Callable, Optional

from .errors import CircuitOpenError, GatewayError, NetworkError, RateLimitError

__all__ = ["RetryPolicy"]

#: Statuses a call is retried on; 502/504 are not: the gateway has already retried its upstream.
RETRY_STATUSES = frozenset({429, 503})


@dataclass(frozen=True)
class RetryPolicy:
    """``max_retries`` retries after the first try; delays in seconds."""

    max_retries: int = 3
    base_delay: float = 0.2
    max_delay: float = 5.0
    #: The longest ``Retry-After`` the SDK waits for by itself; longer ones raise at once.
    max_retry_after: float = 30.0
    random: Callable[[], float] = field(default=random.random, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.max_retries < 0:
            raise ValueError("max_retries must be >= 0")
        if self.base_delay < 0 or self.max_delay < 0 or self.max_retry_after < 0:
            raise ValueError("delays must be >= 0")

    def backoff(self, retry: int) -> float:
        """The delay before retry number ``retry`` (0-based): uniform in [0, min(max, base * 2^retry)]."""
        # Capped exponent: 2 ** 1000 is a float overflow long before max_delay matters.
        bound = min(self.max_delay, self.base_delay * (2 ** min(retry, 62)))
        return self.random() * bound

    def delay_for(self, error: GatewayError, retry: int, retry_safe: bool) -> Optional[float]:
        """How long to wait before retry number ``retry`` after ``error``; None: do not retry.

        ``retry_safe``: the call may run twice without harm (an idempotent method, or an
        idempotency key the gateway deduplicates on).
        """
        if retry >= self.max_retries:
            return None
        if isinstance(error, NetworkError):
            # A refused connection never reached the gateway: safe for any call.
            if not retry_safe and error.details.get("phase") != "connect":
                return None
            return self.backoff(retry)
        if error.status not in RETRY_STATUSES or not retry_safe:
            return None
        if error.code == "tool_unavailable":
            return None  # a missing secret does not fix itself in seconds
        if error.retry_after is not None:
            if error.retry_after > self.max_retry_after:
                return None
            return error.retry_after
        if isinstance(error, (RateLimitError, CircuitOpenError)) or error.status == 503:
            return self.backoff(retry)
        return None
