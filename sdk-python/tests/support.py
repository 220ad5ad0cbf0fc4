"""Shared test helpers: the gateway the harness started (test/e2e/python-sdk.test.ts) and a
scriptable local HTTP server standing in for a gateway that misbehaves on purpose."""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
import time
import unittest
import urllib.request
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Dict, List, Optional, Tuple

# Runnable from a checkout without installing the package.
sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from runrgateway import AdminClient, RetryPolicy  # noqa: E402


def gateway_env() -> Dict[str, str]:
    """The gateway's coordinates, or a skip (a failure when the harness requires the gateway)."""
    names = ["RUNR_SDK_TEST_URL", "RUNR_SDK_TEST_ADMIN_URL", "RUNR_SDK_TEST_ADMIN_KEY", "RUNR_SDK_TEST_KEY_FILE"]
    missing = [n for n in names if not os.environ.get(n)]
    if missing:
        message = f"no gateway to test against ({', '.join(missing)} unset): run test/e2e/python-sdk.test.ts"
        if os.environ.get("RUNR_SDK_TEST_REQUIRE_GATEWAY") == "1":
            raise RuntimeError(message)
        raise unittest.SkipTest(message)
    return {n[len("RUNR_SDK_TEST_"):].lower(): v for n, v in os.environ.items() if n.startswith("RUNR_SDK_TEST_")}


def fast_retry(**overrides: Any) -> RetryPolicy:
    """A retry policy with short delays so tests stay quick."""
    return RetryPolicy(**{"max_retries": 2, "base_delay": 0.01, "max_delay": 0.05, **overrides})


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def add_fault(env: Dict[str, str], fake: str, fault: Dict[str, Any], path: Optional[str] = None) -> None:
    """Queue a fault on one of the harness's fake upstreams (the next matching request gets it)."""
    body = json.dumps({"fault": fault, "options": {"path": path} if path else {}}).encode()
    req = urllib.request.Request(f"{env['faults_url']}/faults/{fake}", body, method="POST")
    with urllib.request.urlopen(req, timeout=5) as answer:
        assert answer.status == 204


def new_agent(admin: AdminClient, name: str, team: str = "sdk", **options: Any) -> Dict[str, Any]:
    """A new agent with a gateway-made key pair; answers the admin API's creation answer."""
    return admin.agents.create(unique(name), labels={"team": team}, **options)


Reply = Tuple[int, Dict[str, str], bytes]


class ScriptedServer:
    """A local HTTP server answering from a script: per path, a list of replies used in order (the
    last one repeats). ``None`` as a reply closes the connection without answering. Every request
    is recorded as (method, path, headers, body)."""

    def __init__(self) -> None:
        self.script: Dict[str, List[Optional[Reply]]] = {}
        self.requests: List[Tuple[str, str, Dict[str, str], bytes]] = []
        self.connections: List[socket.socket] = []
        #: Seconds to wait before answering, per path.
        self.delays: Dict[str, float] = {}
        self._lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *_args: Any) -> None:
                pass

            def setup(self) -> None:
                super().setup()
                with owner._lock:
                    owner.connections.append(self.connection)

            def _handle(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else b""
                path = self.path.split("?", 1)[0]
                with owner._lock:
                    owner.requests.append((self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body))
                    replies = owner.script.get(path) or owner.script.get("*") or [(404, {}, b"")]
                    reply = replies.pop(0) if len(replies) > 1 else replies[0]
                    delay = owner.delays.get(path, 0.0)
                if delay:
                    time.sleep(delay)
                if reply is None:
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                status, headers, payload = reply
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _handle

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, *_args: Any) -> None:
                pass  # a client that gave up (timeout tests) is expected here

        self.server = Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.02,), daemon=True)
        self.thread.start()
        # By default it plays a gateway that issues tokens.
        self.on("/.well-known/oauth-authorization-server", json_reply(200, {"issuer": self.url}))
        self.on("/v1/token", json_reply(200, {"access_token": "tok", "token_type": "Bearer", "expires_in": 900}))

    def on(self, path: str, *replies: Optional[Reply]) -> None:
        with self._lock:
            self.script[path] = list(replies)

    def seen(self, path: str) -> List[Tuple[str, str, Dict[str, str], bytes]]:
        with self._lock:
            return [r for r in self.requests if r[1].split("?", 1)[0] == path]

    def drop_idle_connections(self) -> None:
        """Close every connection from the server side, as a keep-alive timeout does."""
        with self._lock:
            connections, self.connections = self.connections, []
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def json_reply(status: int, body: Any, headers: Optional[Dict[str, str]] = None) -> Reply:
    return status, {"Content-Type": "application/json", **(headers or {})}, json.dumps(body).encode()


def error_reply(status: int, code: str, headers: Optional[Dict[str, str]] = None, **details: Any) -> Reply:
    """The gateway's common error body (DESIGN §15)."""
    error: Dict[str, Any] = {"code": code, "message": f"{code} here", "status": status, "requestId": "req-1"}
    if details:
        error["details"] = details
    return json_reply(status, {"error": error}, headers)


def free_port() -> int:
    """A port nothing listens on (bound and released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


Sleeps = Callable[[float], None]
