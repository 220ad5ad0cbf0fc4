"""Access tokens for an agent (DESIGN §5): RFC 7523 jwt-bearer exchange, refresh before expiry,
and RFC 9449 DPoP proofs when the token is bound to the agent's key.
"""

from __future__ import annotations

import threading
import time
from typing import Callable, Dict, Optional, Tuple
from urllib.parse import urlencode, urlsplit

from .core import Caller, decode_json
from .errors import AuthError, GatewayError
from .keys import AgentKey, new_jti, sha256_b64url, sign_jws

__all__ = ["TokenManager", "JWT_BEARER"]

JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
#: Assertions live one minute; the gateway accepts at most five.
ASSERTION_LIFETIME = 60


class _Token:
    __slots__ = ("value", "kind", "scope", "refresh_at", "expires_at")

    def __init__(self, value: str, kind: str, scope: str, refresh_at: float, expires_at: float) -> None:
        self.value = value
        self.kind = kind
        self.scope = scope
        self.refresh_at = refresh_at
        self.expires_at = expires_at


class TokenManager:
    """Holds the agent's current token; thread-safe. ``clock`` is wall time (token lifetimes)."""

    def __init__(
        self,
        caller: Caller,
        key: AgentKey,
        agent_id: str,
        *,
        intent: Optional[str],
        ttl: Optional[int],
        dpop: bool,
        issuer: Optional[str],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._caller = caller
        self._key = key
        self._agent_id = agent_id
        self._intent = intent
        self._ttl = ttl
        self.dpop = dpop
        self._issuer = issuer
        self._clock = clock
        self._lock = threading.Lock()
        self._token: Optional[_Token] = None
        self._public_jwk = key.public_jwk() if dpop else None
        #: How many tokens this manager obtained (tests and diagnostics).
        self.exchanges = 0

    # -- issuer -----------------------------------------------------------------------------------

    def issuer(self) -> str:
        """The gateway's issuer: the assertion audience and the origin of DPoP ``htu`` values."""
        if self._issuer is None:
            answer = self._caller.send(
                "GET",
                "/.well-known/oauth-authorization-server",
                prepare=lambda: ({}, None),
                retry_safe=True,
            )
            metadata = decode_json(answer, "GET", "/.well-known/oauth-authorization-server")
            issuer = metadata.get("issuer") if isinstance(metadata, dict) else None
            if not isinstance(issuer, str) or urlsplit(issuer).scheme not in ("http", "https"):
                raise GatewayError(
                    "invalid_response",
                    "the gateway's metadata names no issuer (is base_url a 4Runr Gateway?)",
                    answer.status,
                )
            # A key file remembers the gateway it was made for: another server claiming that issuer
            # would otherwise collect assertions valid at the real gateway.
            if self._key.issuer is not None and issuer != self._key.issuer:
                raise AuthError(
                    "issuer_mismatch",
                    f"the gateway at base_url names issuer {issuer!r}, the key file was made for "
                    f"{self._key.issuer!r}; pass issuer= to override",
                )
            self._issuer = issuer
        return self._issuer

    def htu(self, path: str) -> str:
        """RFC 9449 §4.2 htu: the gateway checks it against its issuer's origin and the path."""
        parts = urlsplit(self.issuer())
        return f"{parts.scheme}://{parts.netloc}{self._caller.transport.prefix}{path}"

    # -- proofs -----------------------------------------------------------------------------------

    def assertion(self) -> str:
        """A fresh RFC 7523 assertion: iss = sub = agent id, aud = issuer, one-minute life."""
        now = int(self._clock())
        header = {"typ": "JWT"}
        if self._key.kid is not None:
            header["kid"] = self._key.kid
        claims = {
            "iss": self._agent_id,
            "sub": self._agent_id,
            "aud": self.issuer(),
            "iat": now,
            "exp": now + ASSERTION_LIFETIME,
            "jti": new_jti(),
        }
        return sign_jws(self._key.private_key, header, claims)

    def proof(self, method: str, path: str, access_token: Optional[str] = None) -> str:
        """A single-use DPoP proof for ``method path``, with ``ath`` when sent with a token."""
        claims: Dict[str, object] = {
            "htm": method,
            "htu": self.htu(path),
            "iat": int(self._clock()),
            "jti": new_jti(),
        }
        if access_token is not None:
            claims["ath"] = sha256_b64url(access_token)
        return sign_jws(self._key.private_key, {"typ": "dpop+jwt", "jwk": self._public_jwk}, claims)

    # -- tokens -----------------------------------------------------------------------------------

    def get(self, scope: str) -> Tuple[str, str]:
        """(token, scheme) for ``scope``: the held one, or a new one when near expiry or narrower."""
        held = self._token
        if held is not None and held.scope == scope and self._clock() < held.refresh_at:
            return held.value, held.kind
        with self._lock:
            held = self._token
            if held is None or held.scope != scope or self._clock() >= held.refresh_at:
                held = self._exchange(scope)
                self._token = held
            return held.value, held.kind

    def invalidate(self, token: str) -> None:
        """Forget ``token`` (the gateway refused it as expired): the next call exchanges again."""
        with self._lock:
            if self._token is not None and self._token.value == token:
                self._token = None

    def _exchange(self, scope: str) -> _Token:
        form = {"grant_type": JWT_BEARER}
        if scope:
            form["scope"] = scope
        if self._intent is not None:
            form["intent"] = self._intent
        if self._ttl is not None:
            form["ttl"] = str(self._ttl)

        def prepare() -> Tuple[Dict[str, str], bytes]:
            # A new assertion (and proof) per attempt: each jti may be spent only once.
            body = urlencode({**form, "assertion": self.assertion()}).encode("ascii")
            headers = {"Content-Type": "application/x-www-form-urlencoded"}
            if self.dpop:
                headers["DPoP"] = self.proof("POST", "/v1/token")
            return headers, body

        self.issuer()  # discovered before the first attempt is prepared
        started = self._clock()
        # Safe to retry: a failed exchange spent only its own assertion.
        answer = self._caller.send("POST", "/v1/token", prepare=prepare, retry_safe=True)
        data = decode_json(answer, "POST", "/v1/token")
        if not isinstance(data, dict) or not isinstance(data.get("access_token"), str):
            raise GatewayError("invalid_response", "the token answer has no access_token", answer.status)
        try:
            expires_in = float(data.get("expires_in") or 0)
        except (TypeError, ValueError):
            expires_in = 0.0
        # Refresh early, by a fifth of the lifetime and at most a minute, so a call in flight never
        # carries a token that expires on the way.
        margin = min(60.0, expires_in / 5)
        self.exchanges += 1
        kind = "DPoP" if data.get("token_type") == "DPoP" else "Bearer"
        return _Token(data["access_token"], kind, scope, started + expires_in - margin, started + expires_in)
