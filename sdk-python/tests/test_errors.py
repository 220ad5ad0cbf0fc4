"""The gateway's error bodies become the right exception classes."""

from __future__ import annotations

import json
import unittest

from support import fast_retry  # noqa: F401  (puts the package on sys.path)

import runrgateway
from runrgateway import (
    ApprovalRequired,
    AuthError,
    CircuitOpenError,
    GatewayError,
    GatewayTimeoutError,
    PolicyError,
    QuotaError,
    RateLimitError,
    UpstreamError,
)
from runrgateway.errors import error_from_response


def body(code: str, status: int, **details) -> bytes:
    error = {"code": code, "message": "m", "status": status, "requestId": "r-9"}
    if details:
        error["details"] = details
    return json.dumps({"error": error}).encode()


class ErrorMapping(unittest.TestCase):
    def test_each_catalogue_code_picks_its_class(self) -> None:
        cases = {
            ("unauthenticated", 401): AuthError, ("token_expired", 401): AuthError,
            ("token_revoked", 401): AuthError, ("invalid_dpop_proof", 401): AuthError,
            ("invalid_grant", 400): AuthError, ("invalid_scope", 400): PolicyError,
            ("policy_denied", 403): PolicyError, ("forbidden", 403): PolicyError,
            ("rate_limited", 429): RateLimitError, ("quota_exceeded", 429): QuotaError,
            ("upstream_error", 502): UpstreamError, ("tool_unavailable", 503): UpstreamError,
            ("upstream_timeout", 504): GatewayTimeoutError, ("circuit_open", 503): CircuitOpenError,
            ("bad_request", 400): GatewayError, ("not_found", 404): GatewayError,
            ("bulkhead_full", 503): GatewayError, ("internal", 500): GatewayError,
        }
        for (code, status), cls in cases.items():
            error = error_from_response(status, {}, body(code, status, reason="why"))
            self.assertIs(type(error), cls, code)
            self.assertEqual((error.code, error.status, error.request_id, error.reason), (code, status, "r-9", "why"))

    def test_an_unknown_code_keeps_its_code_and_is_typed_by_status(self) -> None:
        error = error_from_response(403, {}, body("brand_new_code", 403))
        self.assertIs(type(error), PolicyError)
        self.assertEqual(error.code, "brand_new_code")

    def test_reads_retry_after_and_the_request_id_header(self) -> None:
        error = error_from_response(429, {"retry-after": "7", "x-request-id": "hdr"}, b"")
        self.assertIsInstance(error, RateLimitError)
        self.assertEqual((error.retry_after, error.request_id, error.code), (7.0, "hdr", "invalid_response"))

    def test_malformed_bodies_never_raise_while_being_read(self) -> None:
        for raw in [b"\xff\xfe", b"null", b"[]", b'{"error": "text"}', b'{"error": {"code": 5}}',
                    b'{"error": {"code": "x", "details": [1], "message": 3}}']:
            error = error_from_response(500, {}, raw)
            self.assertIsInstance(error, GatewayError, raw)
        self.assertEqual(error_from_response(500, {}, b'{"error": {"code": "x", "details": [1]}}').details, {})

    def test_approval_required_cannot_wait_unless_a_client_raised_it(self) -> None:
        pending = ApprovalRequired("approval_required", "m", 202, approval_id="apr_1")
        with self.assertRaises(RuntimeError):
            pending.wait(timeout=0.1)

    def test_timeout_error_is_the_typescript_name_and_never_shadows_the_builtin(self) -> None:
        self.assertIs(runrgateway.TimeoutError, GatewayTimeoutError)
        namespace: dict = {}
        exec("from runrgateway import *", namespace)
        self.assertNotIn("TimeoutError", namespace)
        self.assertIn("GatewayTimeoutError", namespace)

    def test_str_names_code_status_and_request_id(self) -> None:
        error = error_from_response(403, {}, body("policy_denied", 403))
        self.assertEqual(str(error), "policy_denied [403]: m (request r-9)")


if __name__ == "__main__":
    unittest.main()
