"""The agent's client: tool calls through the gateway with the agent's own identity (DESIGN §6)."""

from __future__ import annotations

import os
import re
import ssl
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Tuple, Union
from urllib.parse import quote

from .core import Caller, decode_json, encode_json
from .errors import ApprovalRequired, GatewayError, PolicyError
from .keys import PrivateKeyInput, load_key
from .retry import RetryPolicy
from .tokens import TokenManager
from .transport import Response, Transport

__all__ = ["GatewayClient", "ToolResult"]

_name = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


@dataclass(frozen=True)
class ToolResult:
    """A tool's answer: ``data`` as the upstream gave it (after the policy's redaction) and the
    gateway's ``metadata`` (tool, action, correlationId, cached, attempts, upstreamStatus, durationMs)."""

    data: Any
    metadata: Dict[str, Any] = field(default_factory=dict)
    request_id: Optional[str] = None

    @property
    def correlation_id(self) -> Optional[str]:
        value = self.metadata.get("correlationId")
        return value if isinstance(value, str) else None


def _scope_text(scope: Union[None, str, Iterable[str]]) -> Optional[str]:
    if scope is None:
        return None
    tokens = scope.split() if isinstance(scope, str) else [str(s) for s in scope]
    return " ".join(sorted(set(tokens)))


class GatewayClient:
    """A client for one agent of a 4Runr Gateway.

    ``GatewayClient(base_url, agent_id, key_file="agent.key.json")`` — the key signs the agent's
    token requests; tokens are fetched, refreshed and (with ``dpop=True``) key-bound automatically.
    Without ``scope`` the token's scope grows with the tools called (each new ``tool:action`` costs
    one token exchange); with ``scope`` the token asks for exactly that.
    """

    def __init__(
        self,
        base_url: Optional[str] = None,
        agent_id: Optional[str] = None,
        *,
        private_key: Optional[PrivateKeyInput] = None,
        key_file: Optional[Union[str, "os.PathLike[str]"]] = None,
        scope: Union[None, str, Iterable[str]] = None,
        intent: Optional[str] = None,
        dpop: bool = False,
        token_ttl: Optional[int] = None,
        issuer: Optional[str] = None,
        timeout: float = 30.0,
        retry: Optional[RetryPolicy] = None,
        ssl_context: Optional[ssl.SSLContext] = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        key = load_key(private_key, key_file)
        base_url = base_url or key.gateway_url or os.environ.get("RUNR_URL")
        if base_url is None:
            raise ValueError("base_url is required (or RUNR_URL, or a key file from `4runr agent create`)")
        agent_id = agent_id or key.agent_id
        if not agent_id:
            raise ValueError("agent_id is required (or a key file from `4runr agent create`)")
        self.agent_id = agent_id
        self._transport = Transport(base_url.rstrip("/"), ssl_context)
        self._caller = Caller(self._transport, retry or RetryPolicy(), timeout, sleep=sleep)
        self.tokens = TokenManager(
            self._caller, key, agent_id, intent=intent, ttl=token_ttl, dpop=dpop, issuer=issuer
        )
        self._fixed_scope = _scope_text(scope)
        self._grown: set = set()
        self._scope_lock = threading.Lock()
        self.tools = Tools(self)
        self.serpapi = SerpApi(self)
        self.http_fetch = HttpFetch(self)
        self.openai = OpenAI(self)
        self.gmail = Gmail(self)

    @property
    def base_url(self) -> str:
        return self._transport.url("")

    def __enter__(self) -> "GatewayClient":
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close this thread's connection to the gateway."""
        self._transport.close()

    def __repr__(self) -> str:
        return f"GatewayClient(base_url={self.base_url!r}, agent_id={self.agent_id!r})"

    # -- tokens -----------------------------------------------------------------------------------

    def _scope(self, needed: Optional[str]) -> Tuple[str, bool]:
        """The scope to ask for, and whether ``needed`` was added to it just now."""
        if self._fixed_scope is not None:
            return self._fixed_scope, False
        added = False
        if needed is not None and needed not in self._grown:
            with self._scope_lock:
                added = needed not in self._grown
                self._grown = self._grown | {needed}
        return " ".join(sorted(self._grown)), added

    def _token_for(self, scope: str, needed: Optional[str], added: bool) -> Tuple[str, str]:
        try:
            return self.tokens.get(scope)
        except PolicyError as refused:
            # A tool no policy grants must not spoil the scope of every later call.
            if added and refused.code == "invalid_scope":
                with self._scope_lock:
                    self._grown = self._grown - {needed}
            raise

    def token(self) -> str:
        """The current access token (fetched or refreshed as needed), for calls the SDK lacks."""
        return self.tokens.get(self._scope(None)[0])[0]

    # -- calls ------------------------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        json: Any = None,
        *,
        scope: Optional[str] = None,
        headers: Optional[Mapping[str, str]] = None,
        idempotency_key: Optional[str] = None,
        timeout: Optional[float] = None,
    ) -> Response:
        """An authenticated request to the gateway's public listener; raises typed errors.

        Retried on 429/503 and network errors only when safe: GET/HEAD/PUT/DELETE, or with an
        ``idempotency_key`` (sent as ``Idempotency-Key``, the same on every attempt).
        """
        method = method.upper()
        if not path.startswith("/") or path.startswith("//"):
            raise ValueError("path must be a path on the gateway, starting with a single /")
        body = None if json is None else encode_json(json)
        fixed = dict(headers or {})
        if body is not None:
            fixed.setdefault("Content-Type", "application/json")
        if idempotency_key is not None:
            fixed["Idempotency-Key"] = idempotency_key
        token_scope, added = self._scope(scope)
        sent: Dict[str, str] = {}

        def prepare() -> Tuple[Dict[str, str], Optional[bytes]]:
            token, scheme = self._token_for(token_scope, scope, added)
            sent["token"] = token
            out = dict(fixed)
            out["Authorization"] = f"{scheme} {token}"
            if scheme == "DPoP":
                out["DPoP"] = self.tokens.proof(method, path.split("?", 1)[0], token)
            return out, body

        def on_error(error: GatewayError, _attempt: int) -> bool:
            # An expired token (clock skew, a long pause): exchange once more and try again.
            if error.code == "token_expired" and "refreshed" not in sent:
                sent["refreshed"] = "yes"
                self.tokens.invalidate(sent.get("token", ""))
                return True
            return False

        retry_safe = method in ("GET", "HEAD", "PUT", "DELETE", "OPTIONS") or idempotency_key is not None
        return self._caller.send(
            method, path, prepare=prepare, timeout=timeout, retry_safe=retry_safe, on_error=on_error
        )

    def _call_tool(
        self,
        tool: str,
        action: str,
        params: Optional[Mapping[str, Any]],
        idempotency_key: Optional[str],
        correlation_id: Optional[str],
        timeout: Optional[float],
        approval_id: Optional[str],
    ) -> ToolResult:
        if not _name.match(tool or "") or not _name.match(action or ""):
            raise ValueError("tool and action must be names of letters, digits, _ . -")
        if params is not None and not isinstance(params, Mapping):
            raise TypeError("params must be a mapping (the tool's JSON parameters)")
        headers: Dict[str, str] = {}
        if correlation_id is not None:
            headers["X-Correlation-Id"] = correlation_id
        if approval_id is not None:
            headers["X-Approval-Id"] = approval_id
        # Every tool call carries a key, so it can be retried: the same key on every attempt.
        key = idempotency_key or f"sdk-{uuid.uuid4().hex}"
        path = f"/v1/tools/{quote(tool)}/{quote(action)}"
        answer = self.request(
            "POST",
            path,
            dict(params or {}),
            scope=f"{tool}:{action}",
            headers=headers,
            idempotency_key=key,
            timeout=timeout,
        )
        data = decode_json(answer, "POST", path)
        request_id = answer.headers.get("x-request-id")
        if answer.status == 202:
            raise self._parked(data, request_id, tool, action, params, key, correlation_id, timeout)
        if not isinstance(data, dict) or "data" not in data:
            raise GatewayError(
                "invalid_response", f"POST {path}: the answer has no data", answer.status, request_id
            )
        metadata = data.get("metadata")
        return ToolResult(data["data"], metadata if isinstance(metadata, dict) else {}, request_id)

    def _parked(
        self,
        data: Any,
        request_id: Optional[str],
        tool: str,
        action: str,
        params: Optional[Mapping[str, Any]],
        key: str,
        correlation_id: Optional[str],
        timeout: Optional[float],
    ) -> ApprovalRequired:
        approval_id = data.get("approvalId") if isinstance(data, dict) else None
        if not isinstance(approval_id, str) or not 0 < len(approval_id) <= 128:
            return GatewayError("invalid_response", "a 202 answer without an approvalId", 202, request_id)
        error = ApprovalRequired(
            "approval_required",
            f"{tool}.{action} waits for an operator's approval ({approval_id})",
            202,
            request_id,
            dict(data),
            approval_id=approval_id,
            expires_at=data.get("expiresAt") if isinstance(data.get("expiresAt"), str) else None,
        )
        poll_path = f"/v1/approvals/{quote(approval_id)}"
        scope = f"{tool}:{action}"

        def poll() -> Dict[str, Any]:
            answer = self.request("GET", poll_path, scope=scope)
            polled = decode_json(answer, "GET", poll_path)
            return polled if isinstance(polled, dict) else {}

        def replay() -> ToolResult:
            # Its own key: the replay is another request than the one that was parked.
            return self._call_tool(tool, action, params, f"{key}-approved", correlation_id, timeout, approval_id)

        error._poll = poll
        error._replay = replay
        return error


class Tools:
    """``client.tools``: any tool by name, and the list the token and policies permit."""

    def __init__(self, client: GatewayClient) -> None:
        self._client = client

    def call(
        self,
        tool: str,
        action: str,
        params: Optional[Mapping[str, Any]] = None,
        idempotency_key: Optional[str] = None,
        correlation_id: Optional[str] = None,
        timeout: Optional[float] = None,
        approval_id: Optional[str] = None,
    ) -> ToolResult:
        """``POST /v1/tools/{tool}/{action}`` with ``params``; raises the typed errors of DESIGN §15
        and :class:`ApprovalRequired` when the call waits for an operator."""
        return self._client._call_tool(tool, action, params, idempotency_key, correlation_id, timeout, approval_id)

    def list(self) -> List[Dict[str, Any]]:
        """The tools and actions the token's scope and the policies permit, with parameter schemas."""
        answer = self._client.request("GET", "/v1/tools")
        data = decode_json(answer, "GET", "/v1/tools")
        tools = data.get("tools") if isinstance(data, dict) else None
        if not isinstance(tools, list):
            raise GatewayError("invalid_response", "GET /v1/tools: the answer has no tools list", answer.status)
        return tools


class _Helper:
    _tool = ""

    def __init__(self, client: GatewayClient) -> None:
        self._client = client

    def _call(self, action: str, params: Dict[str, Any], options: Dict[str, Any]) -> ToolResult:
        unknown = set(options) - {"idempotency_key", "correlation_id", "timeout"}
        if unknown:
            raise TypeError(f"unexpected option(s): {', '.join(sorted(unknown))}")
        return self._client._call_tool(
            self._tool,
            action,
            {k: v for k, v in params.items() if v is not None},
            options.get("idempotency_key"),
            options.get("correlation_id"),
            options.get("timeout"),
            None,
        )


class SerpApi(_Helper):
    """``client.serpapi``: web search."""

    _tool = "serpapi"

    def search(
        self,
        q: str,
        num: Optional[int] = None,
        engine: Optional[str] = None,
        location: Optional[str] = None,
        *,
        idempotency_key: Optional[str] = None,
        correlation_id: Optional[str] = None,
        timeout: Optional[float] = None,
    ) -> ToolResult:
        return self._call(
            "search",
            {"q": q, "num": num, "engine": engine, "location": location},
            {"idempotency_key": idempotency_key, "correlation_id": correlation_id, "timeout": timeout},
        )


class HttpFetch(_Helper):
    """``client.http_fetch``: HTTP requests made by the gateway, inside the policy's domains."""

    _tool = "http_fetch"

    def get(self, url: str, headers: Optional[Mapping[str, str]] = None, **options: Any) -> ToolResult:
        return self._call("get", {"url": url, "headers": headers}, options)

    def head(self, url: str, headers: Optional[Mapping[str, str]] = None, **options: Any) -> ToolResult:
        return self._call("head", {"url": url, "headers": headers}, options)

    def post(
        self, url: str, body: Any = None, headers: Optional[Mapping[str, str]] = None, **options: Any
    ) -> ToolResult:
        return self._call("post", {"url": url, "body": body, "headers": headers}, options)


class OpenAI(_Helper):
    """``client.openai``: chat completions and embeddings with the gateway's key."""

    _tool = "openai"

    def chat(
        self,
        messages: List[Mapping[str, Any]],
        model: str = "gpt-4o-mini",
        *,
        idempotency_key: Optional[str] = None,
        correlation_id: Optional[str] = None,
        timeout: Optional[float] = None,
        **body: Any,
    ) -> ToolResult:
        """The OpenAI chat body (``messages``, ``model`` and any other field); not streamed."""
        if body.get("stream"):
            raise ValueError("stream=True is not supported by this synchronous SDK; use /v1/openai/* instead")
        return self._call(
            "chat",
            {"model": model, "messages": list(messages), **body},
            {"idempotency_key": idempotency_key, "correlation_id": correlation_id, "timeout": timeout},
        )

    def embeddings(self, input: Any, model: str = "text-embedding-3-small", **options: Any) -> ToolResult:
        return self._call("embeddings", {"model": model, "input": input}, options)


class Gmail(_Helper):
    """``client.gmail``: send mail and read the mailbox profile."""

    _tool = "gmail"

    def send(self, to: str, subject: str, text: str, **options: Any) -> ToolResult:
        return self._call("send", {"to": to, "subject": subject, "text": text}, options)

    def profile(self, **options: Any) -> ToolResult:
        return self._call("profile", {}, options)
