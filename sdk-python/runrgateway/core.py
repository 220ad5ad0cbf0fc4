"""The call loop both clients share: send, turn error answers into typed errors, retry.

Each attempt is prepared afresh (``prepare`` answers its headers and body) because a DPoP proof
or an assertion is single-use and a token may be refreshed between attempts. A call has one deadline (``timeout``) across all its attempts: a
retry whose wait would pass it is not made.
"""

from __future__ import annotations

import json
import time
from typing import Any, Callable, Mapping, Optional, Tuple

from .errors import GatewayError, GatewayTimeoutError, NetworkError, error_from_response
from .retry import RetryPolicy
from .transport import Response, Transport

__all__ = ["Caller", "encode_json"]


def encode_json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def decode_json(response: Response, method: str, path: str) -> Any:
    """The JSON of a successful answer; a non-JSON success is a GatewayError, never a crash."""
    if response.status == 204 or response.body == b"":
        return None
    try:
        return response.json()
    except (UnicodeDecodeError, ValueError):
        raise GatewayError(
            "invalid_response",
            f"{method} {path}: HTTP {response.status} with a body that is not JSON",
            response.status,
            response.headers.get("x-request-id"),
            {
                "contentType": response.headers.get("content-type"),
                "bodyPreview": response.body[:200].decode("utf-8", "replace"),
            },
        ) from None


class Caller:
    """Sends calls with retries; ``sleep`` and ``clock`` are injectable for tests."""

    def __init__(
        self,
        transport: Transport,
        retry: RetryPolicy,
        timeout: float,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if timeout <= 0:
            raise ValueError("timeout must be > 0 seconds")
        self.transport = transport
        self.retry = retry
        self.timeout = timeout
        self.sleep = sleep
        self.clock = clock

    def send(
        self,
        method: str,
        path: str,
        *,
        prepare: Callable[[], Tuple[Mapping[str, str], Optional[bytes]]],
        timeout: Optional[float] = None,
        retry_safe: bool,
        on_error: Optional[Callable[[GatewayError, int], bool]] = None,
    ) -> Response:
        """Send until an answer below 400 (202 included), or raise the last typed error.

        ``on_error(error, attempt)`` may fix what caused an error (refresh a token) and return True
        to try again at once, outside the retry budget; it must not do so forever.
        """
        budget = self.timeout if timeout is None else timeout
        if budget <= 0:
            raise ValueError("timeout must be > 0 seconds")
        deadline = self.clock() + budget
        retries = 0
        attempt = 0
        resent = False
        while True:
            attempt += 1
            left = deadline - self.clock()
            if left <= 0:
                raise GatewayTimeoutError("timeout", f"{method} {path}: no answer within {budget:g}s")
            # Outside the try: a token that cannot be had has been retried on its own already.
            headers, body = prepare()
            try:
                response = self.transport.request(method, path, headers, body, timeout=left)
                if response.status < 400:
                    return response
                error = error_from_response(response.status, response.headers, response.body)
            except NetworkError as err:
                # A kept-alive connection the gateway had closed: once, at once, freshly prepared.
                if err.details.get("phase") == "stale" and not resent and (retry_safe or err.details.get("unsent")):
                    resent = True
                    continue
                error = err
            except GatewayError as err:
                error = err
            if on_error is not None and on_error(error, attempt):
                continue
            delay = self.retry.delay_for(error, retries, retry_safe)
            if delay is None or self.clock() + delay >= deadline:
                raise error
            retries += 1
            self.sleep(delay)

