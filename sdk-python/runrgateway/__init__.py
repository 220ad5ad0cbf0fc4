"""runrgateway: the Python client of 4Runr Gateway.

    from runrgateway import GatewayClient
    client = GatewayClient("http://127.0.0.1:8080", key_file="research-bot.key.json")
    print(client.serpapi.search(q="4runr gateway").data)
"""

from . import errors as _errors
from ._version import __version__
from .admin import AdminClient
from .client import GatewayClient, ToolResult
from .errors import (
    ApprovalRequired,
    AuthError,
    CircuitOpenError,
    GatewayError,
    GatewayTimeoutError,
    NetworkError,
    PolicyError,
    QuotaError,
    RateLimitError,
    UpstreamError,
)
from .retry import RetryPolicy

#: The TypeScript SDK's name for GatewayTimeoutError. Left out of ``__all__`` so that
#: ``from runrgateway import *`` never shadows Python's builtin TimeoutError.
TimeoutError = GatewayTimeoutError  # noqa: A001

__all__ = ["__version__", "AdminClient", "GatewayClient", "ToolResult", "RetryPolicy", *_errors.__all__]
