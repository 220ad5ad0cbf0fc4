"""The operator's client for the admin listener (DESIGN §3, §18): agents and their keys,
policies, secrets, revocations and approvals. Authenticated with an admin key.
"""

from __future__ import annotations

import os
import ssl
import time
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple
from urllib.parse import quote, urlencode

from .core import Caller, decode_json, encode_json
from .retry import RetryPolicy
from .transport import Transport

__all__ = ["AdminClient"]


def _seg(value: str) -> str:
    if not isinstance(value, str) or value == "":
        raise ValueError("an id or name must be a non-empty string")
    return quote(value, safe="")


def _drop_none(values: Mapping[str, Any]) -> Dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


class AdminClient:
    """``AdminClient(admin_url, admin_key)``; both default to ``RUNR_ADMIN_URL`` and ``RUNR_ADMIN_KEY``.

    Reads and PUT/DELETE are retried on 429/503 and network errors; POSTs only when the connection
    was refused (they create things: a blind retry could create two).
    """

    def __init__(
        self,
        admin_url: Optional[str] = None,
        admin_key: Optional[str] = None,
        *,
        timeout: float = 30.0,
        retry: Optional[RetryPolicy] = None,
        ssl_context: Optional[ssl.SSLContext] = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        admin_url = admin_url or os.environ.get("RUNR_ADMIN_URL") or "http://127.0.0.1:8081"
        key = admin_key or os.environ.get("RUNR_ADMIN_KEY")
        if not key:
            raise ValueError("admin_key is required (or RUNR_ADMIN_KEY)")
        self._authorization = f"Bearer {key}"
        self._transport = Transport(admin_url.rstrip("/"), ssl_context)
        self._caller = Caller(self._transport, retry or RetryPolicy(), timeout, sleep=sleep)
        self.agents = Agents(self)
        self.policies = Policies(self)
        self.secrets = Secrets(self)
        self.revocations = Revocations(self)
        self.approvals = Approvals(self)

    def __enter__(self) -> "AdminClient":
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._transport.close()

    def __repr__(self) -> str:  # the key stays out of reprs and tracebacks
        return f"AdminClient(admin_url={self._transport.url('')!r})"

    def request(
        self,
        method: str,
        path: str,
        json: Any = None,
        *,
        query: Optional[Mapping[str, Any]] = None,
        timeout: Optional[float] = None,
    ) -> Any:
        """One admin API call; answers the parsed JSON (None for 204), raises typed errors."""
        method = method.upper()
        if not path.startswith("/") or path.startswith("//"):
            raise ValueError("path must be a path on the admin listener, starting with a single /")
        body = None if json is None else encode_json(json)
        headers = {"Authorization": self._authorization}
        if body is not None:
            headers["Content-Type"] = "application/json"
        if query:
            pairs = _drop_none(query)
            if pairs:
                path = f"{path}?{urlencode(pairs)}"

        def prepare() -> Tuple[Dict[str, str], Optional[bytes]]:
            return headers, body

        answer = self._caller.send(
            method, path, prepare=prepare, timeout=timeout, retry_safe=method != "POST" and method != "PATCH"
        )
        return decode_json(answer, method, path)


class _Resource:
    def __init__(self, admin: AdminClient) -> None:
        self._admin = admin


class Agents(_Resource):
    """Agents and their keys (``/v1/agents``)."""

    def create(
        self,
        name: str,
        labels: Optional[Mapping[str, str]] = None,
        roles: Optional[List[str]] = None,
        public_key_jwk: Optional[Mapping[str, Any]] = None,
        require_dpop: Optional[bool] = None,
    ) -> Dict[str, Any]:
        """A new agent: ``{id, name, labels, roles, status, kid, privateKeyJwk?}``. Without
        ``public_key_jwk`` the gateway makes the key pair and returns the private key once."""
        body = _drop_none(
            {"name": name, "labels": labels, "roles": roles, "publicKeyJwk": public_key_jwk, "requireDpop": require_dpop}
        )
        return self._admin.request("POST", "/v1/agents", body)

    def list(self, limit: Optional[int] = None, after: Optional[str] = None) -> Dict[str, Any]:
        """One page: ``{agents: [...], next}``; pass ``after=next`` for the following page."""
        return self._admin.request("GET", "/v1/agents", query={"limit": limit, "after": after})

    def get(self, agent_id: str) -> Dict[str, Any]:
        return self._admin.request("GET", f"/v1/agents/{_seg(agent_id)}")

    def update(
        self,
        agent_id: str,
        *,
        status: Optional[str] = None,
        labels: Optional[Mapping[str, str]] = None,
        roles: Optional[List[str]] = None,
        require_dpop: Optional[bool] = None,
    ) -> Dict[str, Any]:
        """``PATCH``: ``status="disabled"`` is the kill switch for new tokens."""
        body = _drop_none({"status": status, "labels": labels, "roles": roles, "requireDpop": require_dpop})
        return self._admin.request("PATCH", f"/v1/agents/{_seg(agent_id)}", body)

    def delete(self, agent_id: str) -> None:
        self._admin.request("DELETE", f"/v1/agents/{_seg(agent_id)}")

    def add_key(
        self,
        agent_id: str,
        public_key_jwk: Optional[Mapping[str, Any]] = None,
        not_after_old: Optional[str] = None,
    ) -> Dict[str, Any]:
        """A new key (``{kid, privateKeyJwk?, agent}``); ``not_after_old`` (RFC 3339) retires the others."""
        body = _drop_none({"publicKeyJwk": public_key_jwk, "notAfterOld": not_after_old})
        return self._admin.request("POST", f"/v1/agents/{_seg(agent_id)}/keys", body)

    def issue_token(
        self, agent_id: str, scope: Optional[str] = None, intent: Optional[str] = None, ttl: Optional[int] = None
    ) -> Dict[str, Any]:
        """An admin-issued token for an agent without keys (never key-bound)."""
        body = _drop_none({"scope": scope, "intent": intent, "ttl": ttl})
        return self._admin.request("POST", f"/v1/agents/{_seg(agent_id)}/tokens", body)


class Policies(_Resource):
    """Policies (``/v1/policies``), versioned."""

    def list(self) -> Dict[str, Any]:
        return self._admin.request("GET", "/v1/policies")

    def get(self, name: str) -> Dict[str, Any]:
        return self._admin.request("GET", f"/v1/policies/{_seg(name)}")

    def put(self, name: str, policy: Mapping[str, Any], expected_version: Optional[int] = None) -> Dict[str, Any]:
        """Create or replace; with ``expected_version`` a concurrent change answers 409."""
        return self._admin.request(
            "PUT", f"/v1/policies/{_seg(name)}", dict(policy), query={"expectedVersion": expected_version}
        )

    def delete(self, name: str) -> None:
        self._admin.request("DELETE", f"/v1/policies/{_seg(name)}")

    def history(self, name: str) -> List[Dict[str, Any]]:
        return self._admin.request("GET", f"/v1/policies/{_seg(name)}/history")["versions"]

    def evaluate(self, agent: str, **facts: Any) -> Dict[str, Any]:
        """Explain a decision: ``evaluate("bot", tool="serpapi", action="search", args={...})``."""
        return self._admin.request("POST", "/v1/policies/evaluate", {"agent": agent, **_drop_none(facts)})


class Secrets(_Resource):
    """The encrypted secret store: write-only values, listed by name."""

    def list(self) -> List[Dict[str, Any]]:
        return self._admin.request("GET", "/v1/secrets")["secrets"]

    def set(self, name: str, value: str, agent: Optional[str] = None) -> None:
        """Store ``value`` under ``name`` (for one agent with ``agent``); it is never readable again."""
        self._admin.request("PUT", f"/v1/secrets/{_seg(name)}", _drop_none({"value": value, "agent": agent}))

    def delete(self, name: str, agent: Optional[str] = None) -> None:
        self._admin.request("DELETE", f"/v1/secrets/{_seg(name)}", query={"agent": agent})


class Revocations(_Resource):
    """Revocations: of one token (by ``jti`` or the ``token`` itself), an agent, or one of its keys."""

    def create(
        self,
        *,
        jti: Optional[str] = None,
        token: Optional[str] = None,
        agent_id: Optional[str] = None,
        kid: Optional[str] = None,
        reason: Optional[str] = None,
    ) -> Dict[str, Any]:
        body = _drop_none({"jti": jti, "token": token, "agentId": agent_id, "kid": kid, "reason": reason})
        return self._admin.request("POST", "/v1/revocations", body)

    def list(self) -> List[Dict[str, Any]]:
        return self._admin.request("GET", "/v1/revocations")["revocations"]


class Approvals(_Resource):
    """Calls parked for approval."""

    def list(
        self,
        status: Optional[str] = None,
        agent: Optional[str] = None,
        limit: Optional[int] = None,
        after: Optional[str] = None,
    ) -> Dict[str, Any]:
        """One page: ``{approvals: [...], next}``."""
        return self._admin.request(
            "GET", "/v1/approvals", query={"status": status, "agent": agent, "limit": limit, "after": after}
        )

    def get(self, approval_id: str) -> Dict[str, Any]:
        return self._admin.request("GET", f"/v1/approvals/{_seg(approval_id)}")

    def approve(self, approval_id: str, note: Optional[str] = None) -> Dict[str, Any]:
        return self._admin.request("POST", f"/v1/approvals/{_seg(approval_id)}", _drop_none({"decision": "approve", "note": note}))

    def reject(self, approval_id: str, note: Optional[str] = None) -> Dict[str, Any]:
        return self._admin.request("POST", f"/v1/approvals/{_seg(approval_id)}", _drop_none({"decision": "reject", "note": note}))
