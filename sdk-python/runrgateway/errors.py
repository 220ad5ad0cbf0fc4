"""Typed errors mirroring the gateway's error catalogue (DESIGN §15).

Every answer the gateway refuses carries one JSON body,
``{"error": {"code", "message", "status", "requestId", "details"}}``; :func:`error_from_response`
turns it into the matching exception so callers branch on the class or on the stable ``code``.
"""

from __future__ import annotations

import json
from typing import Any, Callable, Dict, Mapping, Optional, Type

__all__ = [
    "GatewayError",
    "AuthError",
    "PolicyError",
    "ApprovalRequired",
    "RateLimitError",
    "QuotaError",
    "UpstreamError",
    "GatewayTimeoutError",
    "CircuitOpenError",
    "NetworkError",
]


class GatewayError(Exception):
    """An error answer of the gateway, or a failure to get one.

    ``code`` is the stable code of DESIGN §15 (``policy_denied``, ``rate_limited``, ...), or one of
    the SDK's own (the TypeScript SDK's too): ``network_error``, ``timeout``, ``approval_timeout``,
    ``invalid_response``, ``issuer_mismatch``. ``status`` is the HTTP
    status, ``None`` when no answer arrived.
    """

    def __init__(
        self,
        code: str,
        message: str,
        status: Optional[int] = None,
        request_id: Optional[str] = None,
        details: Optional[Dict[str, Any]] = None,
        retry_after: Optional[float] = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status
        self.request_id = request_id
        self.details: Dict[str, Any] = details or {}
        self.retry_after = retry_after

    @property
    def reason(self) -> Optional[str]:
        """``details.reason`` when the gateway gave one (e.g. ``replayed_jti``, ``quota_calls``)."""
        value = self.details.get("reason")
        return value if isinstance(value, str) else None

    def __str__(self) -> str:
        where = f" [{self.status}]" if self.status is not None else ""
        rid = f" (request {self.request_id})" if self.request_id else ""
        return f"{self.code}{where}: {self.message}{rid}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code!r}, status={self.status!r}, message={self.message!r})"


class AuthError(GatewayError):
    """The agent could not be authenticated: bad key or assertion, expired/revoked token, DPoP."""


class PolicyError(GatewayError):
    """A policy or the token's scope refuses the call (403), or no policy can grant a scope."""


class ApprovalRequired(GatewayError):
    """The call is parked until an operator approves it (202).

    :meth:`wait` polls the approval and, once approved, replays the call and returns its answer.
    """

    def __init__(self, *args: Any, approval_id: str, expires_at: Optional[str] = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.approval_id = approval_id
        self.expires_at = expires_at
        # Set by the client that made the call: how to poll, and how to replay once approved.
        self._poll: Optional[Callable[[], Dict[str, Any]]] = None
        self._replay: Optional[Callable[[], Any]] = None

    def status_now(self) -> str:
        """The approval's current status: ``pending``, ``approved``, ``rejected``, ``used`` or ``expired``."""
        if self._poll is None:
            raise RuntimeError("this ApprovalRequired was not raised by a GatewayClient call")
        return str(self._poll().get("status"))

    def wait(self, timeout: float = 600.0, interval: float = 2.0) -> Any:
        """Poll until the approval is decided, then replay the call once and return its answer.

        Raises :class:`PolicyError` when the operator rejects the call or the approval expires
        (the replay reports it), and :class:`GatewayTimeoutError` when ``timeout`` seconds pass first.
        """
        import time

        if self._poll is None or self._replay is None:
            raise RuntimeError("this ApprovalRequired was not raised by a GatewayClient call")
        deadline = time.monotonic() + timeout
        while True:
            status = self.status_now()
            if status != "pending":
                # The replay turns rejected/expired/used into the gateway's own typed error.
                return self._replay()
            left = deadline - time.monotonic()
            if left <= 0:
                raise GatewayTimeoutError(
                    "approval_timeout",
                    f"approval {self.approval_id} was not decided within {timeout:g}s",
                    details={"approvalId": self.approval_id},
                )
            time.sleep(min(interval, left))


class RateLimitError(GatewayError):
    """Too many requests (429); ``retry_after`` says when to try again, in seconds."""


class QuotaError(RateLimitError):
    """A quota of the deciding policy rule is used up (429 ``quota_exceeded``)."""


class UpstreamError(GatewayError):
    """The tool's upstream failed or answered something unusable (502), or is unavailable."""


class GatewayTimeoutError(GatewayError):
    """The upstream did not answer in time (504), or the call's own ``timeout`` ran out.

    Exported as ``runrgateway.TimeoutError`` as well, the TypeScript SDK's name; this name does not
    shadow Python's builtin ``TimeoutError``.
    """


class CircuitOpenError(GatewayError):
    """The gateway's circuit breaker for the upstream is open (503 ``circuit_open``)."""


class NetworkError(GatewayError):
    """No answer from the gateway: connection refused or reset, DNS or TLS failure."""


_by_code: Dict[str, Type[GatewayError]] = {
    "unauthenticated": AuthError,
    "token_expired": AuthError,
    "token_revoked": AuthError,
    "invalid_dpop_proof": AuthError,
    "invalid_grant": AuthError,
    "invalid_request": AuthError,
    "unsupported_grant_type": AuthError,
    "forbidden": PolicyError,
    "policy_denied": PolicyError,
    "invalid_scope": PolicyError,
    "rate_limited": RateLimitError,
    "quota_exceeded": QuotaError,
    "upstream_error": UpstreamError,
    "tool_unavailable": UpstreamError,
    "upstream_timeout": GatewayTimeoutError,
    "circuit_open": CircuitOpenError,
}

# For answers without the gateway's body (a proxy's HTML page): judge by status alone.
_by_status: Dict[int, Type[GatewayError]] = {
    401: AuthError,
    403: PolicyError,
    429: RateLimitError,
    502: UpstreamError,
    504: GatewayTimeoutError,
}


def parse_retry_after(value: Optional[str], now: Optional[float] = None) -> Optional[float]:
    """``Retry-After`` in seconds (RFC 9110 §10.2.3: delay-seconds or an HTTP-date); None if absent or bad."""
    if value is None:
        return None
    text = value.strip()
    if text.isdigit():
        return float(int(text))
    from email.utils import parsedate_to_datetime

    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    import time

    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def error_from_response(status: int, headers: Mapping[str, str], body: bytes) -> GatewayError:
    """The typed error for an error answer: by the body's ``code`` when it has the common shape."""
    request_id = headers.get("x-request-id")
    retry_after = parse_retry_after(headers.get("retry-after"))
    error: Any = None
    try:
        parsed = json.loads(body.decode("utf-8")) if body else None
        if isinstance(parsed, dict):
            error = parsed.get("error")
    except (UnicodeDecodeError, ValueError):
        error = None
    if isinstance(error, dict) and isinstance(error.get("code"), str):
        code = error["code"]
        details = error.get("details") if isinstance(error.get("details"), dict) else None
        cls = _by_code.get(code) or _by_status.get(status) or GatewayError
        message = error.get("message") if isinstance(error.get("message"), str) else code
        rid = error.get("requestId") if isinstance(error.get("requestId"), str) else request_id
        return cls(code, message, status, rid, details, retry_after)
    cls = _by_status.get(status, GatewayError)
    preview = body[:200].decode("utf-8", "replace")
    return cls(
        "invalid_response",
        f"HTTP {status} without the gateway's error body",
        status,
        request_id,
        {"contentType": headers.get("content-type"), "bodyPreview": preview},
        retry_after,
    )
