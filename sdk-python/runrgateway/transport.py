"""HTTP/1.1 on the standard library, one keep-alive connection per thread and origin.

A kept-alive connection the gateway closed while idle is noticed before it is used (it reads as
ready) and replaced. One closed in the instant before the request fails: that failure is a
NetworkError with phase ``stale`` (``unsent`` when it broke while sending), which the call loop
answers by preparing the request afresh (a DPoP proof or an assertion is single-use) and sending
it on a new connection at once.
"""

from __future__ import annotations

import http.client
import json
import select
import socket
import ssl
import threading
from typing import Any, Dict, Mapping, Optional, Tuple
from urllib.parse import urlsplit

from ._version import __version__
from .errors import GatewayTimeoutError, NetworkError

__all__ = ["Response", "Transport", "parse_base_url"]

USER_AGENT = f"runrgateway-python/{__version__}"


class Response:
    """A complete HTTP answer: status, lower-case headers, body bytes."""

    __slots__ = ("status", "headers", "body")

    def __init__(self, status: int, headers: Dict[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    def json(self) -> Any:
        return json.loads(self.body.decode("utf-8"))


def parse_base_url(url: str) -> Tuple[str, str, int, str]:
    """(scheme, host, port, path prefix) of an ``http(s)://host[:port][/prefix]`` URL."""
    if not isinstance(url, str) or url == "":
        raise ValueError("base_url must be an http:// or https:// URL")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"base_url must be an http:// or https:// URL, not {url!r}")
    if not parts.hostname:
        raise ValueError(f"base_url has no host: {url!r}")
    if parts.username or parts.password:
        raise ValueError("base_url must not carry credentials")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as err:
        raise ValueError(f"base_url has a bad port: {url!r}") from err
    return parts.scheme, parts.hostname, port, parts.path.rstrip("/")


def _dropped(sock: socket.socket) -> bool:
    """Whether the peer has closed an idle connection: it reads as ready (EOF) while nothing is due."""
    try:
        if hasattr(select, "poll"):
            poller = select.poll()
            poller.register(sock, select.POLLIN)
            return bool(poller.poll(0))
        return bool(select.select([sock], [], [], 0)[0])
    except (OSError, ValueError):
        return True


class Transport:
    """Sends requests to one origin; thread-safe (each thread has its own connection)."""

    def __init__(self, base_url: str, ssl_context: Optional[ssl.SSLContext] = None) -> None:
        self.scheme, self.host, self.port, self.prefix = parse_base_url(base_url)
        self.origin = f"{self.scheme}://{self.host}" + (
            "" if (self.scheme, self.port) in (("http", 80), ("https", 443)) else f":{self.port}"
        )
        if ":" in self.host:  # IPv6 literal
            self.origin = self.origin.replace(self.host, f"[{self.host}]", 1)
        self._ssl = ssl_context
        self._local = threading.local()

    def url(self, path: str) -> str:
        """The absolute URL of ``path`` (which starts with /) under the base URL."""
        return self.origin + self.prefix + path

    def _connection(self, timeout: Optional[float]) -> Tuple[http.client.HTTPConnection, bool]:
        conn: Optional[http.client.HTTPConnection] = getattr(self._local, "conn", None)
        if conn is not None and conn.sock is not None:
            if not _dropped(conn.sock):
                conn.sock.settimeout(timeout)
                return conn, True
            self.close()
        if self.scheme == "https":
            conn = http.client.HTTPSConnection(self.host, self.port, timeout=timeout, context=self._ssl)
        else:
            conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        try:
            conn.connect()
        except socket.timeout as err:
            conn.close()
            raise NetworkError(
                "network_error",
                f"no connection to {self.origin} within {timeout:g}s",
                details={"phase": "connect"},
            ) from err
        except (OSError, ssl.SSLError) as err:
            conn.close()
            raise NetworkError(
                "network_error",
                f"cannot connect to {self.origin}: {err.strerror or err}",
                details={"phase": "connect"},
            ) from err
        self._local.conn = conn
        return conn, False

    def close(self) -> None:
        """Close this thread's connection."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def request(
        self,
        method: str,
        path: str,
        headers: Mapping[str, str],
        body: Optional[bytes] = None,
        timeout: Optional[float] = None,
    ) -> Response:
        """Send one request and read the whole answer; raises NetworkError or GatewayTimeoutError."""
        target = self.prefix + path
        all_headers = {"User-Agent": USER_AGENT, "Accept": "application/json", **headers}
        conn, reused = self._connection(timeout)
        try:
            conn.request(method, target, body=body, headers=all_headers)
            answer = conn.getresponse()
            data = answer.read()
        except socket.timeout as err:
            self.close()
            raise GatewayTimeoutError(
                "timeout", f"{method} {path}: no answer within {timeout:g}s", details={"phase": "exchange"}
            ) from err
        except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as err:
            self.close()
            details: Dict[str, Any] = {"phase": "stale" if reused else "exchange"}
            if isinstance(err, BrokenPipeError):
                details["unsent"] = True  # broke while sending: the gateway cannot have acted on it
            raise NetworkError(
                "network_error",
                f"{method} {path}: the connection to {self.origin} was closed without an answer",
                details=details,
            ) from err
        except (OSError, http.client.HTTPException) as err:
            self.close()
            raise NetworkError(
                "network_error", f"{method} {path}: {type(err).__name__}: {err}", details={"phase": "exchange"}
            ) from err
        if answer.will_close:
            self.close()
        return Response(answer.status, {k.lower(): v for k, v in answer.getheaders()}, data)
