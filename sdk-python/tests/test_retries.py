"""Retries, idempotency keys and bad answers, against a local server playing a gateway."""

from __future__ import annotations

import base64
import json
import socket
import time
import unittest
from urllib.parse import parse_qs

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from support import ScriptedServer, error_reply, fast_retry, free_port, json_reply

from runrgateway import (
    AdminClient,
    CircuitOpenError,
    GatewayClient,
    GatewayError,
    GatewayTimeoutError,
    NetworkError,
    QuotaError,
    RateLimitError,
    UpstreamError,
)

from runrgateway.keys import sha256_b64url
from runrgateway.transport import _dropped

TOOL = "/v1/tools/serpapi/search"


def decode(part: str) -> dict:
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


ANSWER = json_reply(200, {"data": {"ok": True}, "metadata": {"tool": "serpapi", "action": "search"}})


class Retries(unittest.TestCase):
    def setUp(self) -> None:
        self.server = ScriptedServer()
        self.addCleanup(self.server.close)
        self.sleeps: list = []
        self.client = GatewayClient(
            self.server.url, "agt_1", private_key=Ed25519PrivateKey.generate(),
            retry=fast_retry(max_retries=3), sleep=self.record_sleep,
        )
        self.addCleanup(self.client.close)

    def record_sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        time.sleep(min(seconds, 0.05))

    def keys(self) -> list:
        return [headers.get("idempotency-key") for _, _, headers, _ in self.server.seen(TOOL)]

    def test_waits_out_retry_after_on_429_then_succeeds_with_the_same_idempotency_key(self) -> None:
        self.server.on(TOOL, error_reply(429, "rate_limited", {"Retry-After": "1"}), ANSWER)
        client = GatewayClient(self.server.url, "agt_1", private_key=Ed25519PrivateKey.generate(), retry=fast_retry())
        self.addCleanup(client.close)
        started = time.monotonic()
        result = client.serpapi.search(q="x")
        self.assertGreaterEqual(time.monotonic() - started, 1.0, "Retry-After: 1 was honoured")
        self.assertEqual(result.data, {"ok": True})
        keys = self.keys()
        self.assertEqual(len(keys), 2)
        self.assertTrue(keys[0] and keys[0] == keys[1], keys)

    def test_retries_503_with_jittered_backoff_and_one_key_for_every_attempt(self) -> None:
        self.server.on(TOOL, error_reply(503, "bulkhead_full"), error_reply(503, "bulkhead_full"), ANSWER)
        self.assertEqual(self.client.tools.call("serpapi", "search", {"q": "y"}, idempotency_key="mine").data, {"ok": True})
        self.assertEqual(self.keys(), ["mine", "mine", "mine"])
        self.assertEqual(len(self.sleeps), 2)
        self.assertLessEqual(self.sleeps[0], 0.01)
        self.assertLessEqual(self.sleeps[1], 0.02)

    def test_gives_up_after_max_retries_with_the_last_typed_error(self) -> None:
        self.server.on(TOOL, error_reply(503, "circuit_open", {"Retry-After": "0"}))
        with self.assertRaises(CircuitOpenError) as caught:
            self.client.serpapi.search(q="z")
        self.assertEqual(len(self.server.seen(TOOL)), 4, "one try and three retries")
        self.assertEqual((caught.exception.status, caught.exception.request_id), (503, "req-1"))

    def test_raises_at_once_when_retry_after_is_longer_than_the_cap(self) -> None:
        self.server.on(TOOL, error_reply(429, "quota_exceeded", {"Retry-After": "3600"}, reason="quota_calls"), ANSWER)
        with self.assertRaises(QuotaError) as caught:
            self.client.serpapi.search(q="q")
        self.assertIsInstance(caught.exception, RateLimitError)
        self.assertEqual((caught.exception.retry_after, caught.exception.reason), (3600.0, "quota_calls"))
        self.assertEqual(len(self.server.seen(TOOL)), 1)

    def test_does_not_retry_an_upstream_error(self) -> None:
        self.server.on(TOOL, error_reply(502, "upstream_error", upstreamStatus=500), ANSWER)
        with self.assertRaises(UpstreamError) as caught:
            self.client.serpapi.search(q="u")
        self.assertEqual(caught.exception.details, {"upstreamStatus": 500})
        self.assertEqual(len(self.server.seen(TOOL)), 1)

    def test_never_retries_a_post_without_an_idempotency_key(self) -> None:
        self.server.on("/v1/things", error_reply(503, "bulkhead_full"), json_reply(200, {}))
        with self.assertRaises(GatewayError):
            self.client.request("POST", "/v1/things", {"a": 1})
        self.assertEqual(len(self.server.seen("/v1/things")), 1)
        self.server.on("/v1/things", error_reply(503, "bulkhead_full"), json_reply(200, {}))
        self.client.request("POST", "/v1/things", {"a": 1}, idempotency_key="k")
        self.assertEqual(len(self.server.seen("/v1/things")), 3)

    def test_resends_a_tool_call_whose_connection_was_dropped_without_an_answer(self) -> None:
        self.server.on(TOOL, None, ANSWER)
        self.assertEqual(self.client.serpapi.search(q="drop").data, {"ok": True})
        keys = self.keys()
        self.assertEqual(len(keys), 2)
        self.assertEqual(keys[0], keys[1])

    def test_admin_posts_are_not_retried_but_admin_reads_are(self) -> None:
        admin = AdminClient(self.server.url, "admin-key", retry=fast_retry(), sleep=lambda s: None)
        self.addCleanup(admin.close)
        self.server.on("/v1/agents", error_reply(503, "not_ready"), json_reply(200, {"agents": [], "next": None}))
        with self.assertRaises(GatewayError) as caught:
            admin.agents.create("x")
        self.assertEqual(caught.exception.code, "not_ready")
        self.assertEqual(admin.agents.list(), {"agents": [], "next": None})
        methods = [m for m, *_ in self.server.seen("/v1/agents")]
        self.assertEqual(methods, ["POST", "GET"])
        self.assertEqual(self.server.seen("/v1/agents")[1][2]["authorization"], "Bearer admin-key")
        self.assertNotIn("admin-key", repr(admin))


class FreshProofs(unittest.TestCase):
    def setUp(self) -> None:
        self.server = ScriptedServer()
        self.addCleanup(self.server.close)
        self.key = Ed25519PrivateKey.generate()

    def client(self, **options) -> GatewayClient:
        client = GatewayClient(self.server.url, "agt_1", private_key=self.key, retry=fast_retry(), **options)
        self.addCleanup(client.close)
        return client

    def test_signs_a_new_dpop_proof_for_every_attempt_naming_the_request_and_token(self) -> None:
        self.server.on("/v1/token", json_reply(200, {"access_token": "bound", "token_type": "DPoP", "expires_in": 900}))
        self.server.on(TOOL, error_reply(503, "bulkhead_full"), ANSWER)
        self.client(dpop=True).serpapi.search(q="x")
        attempts = self.server.seen(TOOL)
        self.assertEqual(len(attempts), 2)
        proofs = []
        for _, _, headers, _ in attempts:
            self.assertEqual(headers["authorization"], "DPoP bound")
            header, claims = (decode(part) for part in headers["dpop"].split(".")[:2])
            self.assertEqual((header["typ"], header["alg"], sorted(header["jwk"])), ("dpop+jwt", "EdDSA", ["crv", "kty", "x"]))
            self.assertEqual((claims["htm"], claims["htu"]), ("POST", self.server.url + TOOL))
            self.assertEqual(claims["ath"], sha256_b64url("bound"))
            proofs.append(claims["jti"])
        self.assertNotEqual(proofs[0], proofs[1], "a proof is single-use")
        token_request = self.server.seen("/v1/token")[0]
        self.assertIn("dpop", token_request[2])

    def test_signs_a_new_assertion_when_the_token_exchange_is_retried(self) -> None:
        self.server.on("/v1/token", None, json_reply(200, {"access_token": "t", "token_type": "Bearer", "expires_in": 900}))
        self.server.on(TOOL, ANSWER)
        self.client().serpapi.search(q="x")
        forms = [parse_qs(body.decode()) for _, _, _, body in self.server.seen("/v1/token")]
        self.assertEqual(len(forms), 2)
        claims = [decode(form["assertion"][0].split(".")[1]) for form in forms]
        self.assertNotEqual(claims[0]["jti"], claims[1]["jti"])
        first = claims[0]
        self.assertEqual((first["iss"], first["sub"], first["aud"]), ("agt_1", "agt_1", self.server.url))
        self.assertEqual(first["exp"] - first["iat"], 60)
        self.assertEqual(forms[0]["grant_type"], ["urn:ietf:params:oauth:grant-type:jwt-bearer"])
        self.assertEqual(forms[0]["scope"], ["serpapi:search"])

    def test_a_keep_alive_connection_the_server_closed_is_replaced_without_an_error(self) -> None:
        self.server.on(TOOL, ANSWER)
        client = self.client()
        client.serpapi.search(q="x")
        self.server.drop_idle_connections()
        time.sleep(0.05)
        self.assertEqual(client.serpapi.search(q="y").data, {"ok": True})
        self.assertEqual(len(self.server.seen(TOOL)), 2)
        # An admin POST is never resent blindly, so it must not meet the closed connection at all.
        admin = AdminClient(self.server.url, "k", retry=fast_retry(max_retries=0))
        self.addCleanup(admin.close)
        self.server.on("/v1/agents", json_reply(201, {"id": "agt_2"}))
        admin.agents.list()
        self.server.drop_idle_connections()
        time.sleep(0.05)
        self.assertEqual(admin.agents.create("bot"), {"id": "agt_2"})


class IdleConnections(unittest.TestCase):
    def test_a_connection_the_peer_closed_reads_as_dropped_and_an_idle_open_one_does_not(self) -> None:
        ours, theirs = socket.socketpair()
        self.addCleanup(ours.close)
        self.assertFalse(_dropped(ours))
        theirs.close()
        self.assertTrue(_dropped(ours))


class BadAnswers(unittest.TestCase):
    def setUp(self) -> None:
        self.server = ScriptedServer()
        self.addCleanup(self.server.close)
        self.client = GatewayClient(self.server.url, "agt_1", private_key=Ed25519PrivateKey.generate(),
                                    retry=fast_retry(), sleep=lambda s: None)
        self.addCleanup(self.client.close)

    def test_an_html_error_page_becomes_a_typed_error_by_its_status(self) -> None:
        page = (502, {"Content-Type": "text/html"}, b"<html><body>Bad Gateway</body></html>")
        self.server.on(TOOL, page)
        with self.assertRaises(UpstreamError) as caught:
            self.client.serpapi.search(q="x")
        self.assertEqual(caught.exception.code, "invalid_response")
        self.assertIn("Bad Gateway", caught.exception.details["bodyPreview"])

    def test_a_success_that_is_not_json_is_an_error_not_a_crash(self) -> None:
        self.server.on(TOOL, (200, {"Content-Type": "text/html"}, b"<html>captive portal</html>"))
        with self.assertRaises(GatewayError) as caught:
            self.client.serpapi.search(q="x")
        self.assertEqual((caught.exception.code, caught.exception.status), ("invalid_response", 200))
        self.server.on(TOOL, json_reply(200, ["no", "data"]))
        with self.assertRaises(GatewayError):
            self.client.serpapi.search(q="x")

    def test_a_server_that_is_no_gateway_is_named_as_such(self) -> None:
        self.server.on("/.well-known/oauth-authorization-server", (404, {}, b"not here"))
        with self.assertRaises(GatewayError) as caught:
            self.client.serpapi.search(q="x")
        self.assertEqual((caught.exception.status, caught.exception.code), (404, "invalid_response"))
        self.server.on("/.well-known/oauth-authorization-server", json_reply(200, {"issuer": "ftp://nope"}))
        with self.assertRaisesRegex(GatewayError, "no issuer"):
            self.client.serpapi.search(q="x")

    def test_a_token_answer_without_a_token_is_refused(self) -> None:
        self.server.on("/v1/token", json_reply(200, {"token_type": "Bearer"}))
        with self.assertRaisesRegex(GatewayError, "no access_token"):
            self.client.serpapi.search(q="x")

    def test_a_call_slower_than_its_timeout_raises_a_timeout(self) -> None:
        self.server.on(TOOL, ANSWER)
        self.server.delays[TOOL] = 0.6
        with self.assertRaises(GatewayTimeoutError) as caught:
            self.client.serpapi.search(q="x", timeout=0.3)
        self.assertEqual((caught.exception.code, caught.exception.status), ("timeout", None))
        self.assertEqual(len(self.server.seen(TOOL)), 1, "a call out of time is not retried")


class Unreachable(unittest.TestCase):
    def test_a_closed_port_is_a_network_error_after_the_retries(self) -> None:
        sleeps: list = []
        client = GatewayClient(f"http://127.0.0.1:{free_port()}", "agt_1", private_key=Ed25519PrivateKey.generate(),
                               retry=fast_retry(max_retries=2), sleep=sleeps.append)
        with self.assertRaises(NetworkError) as caught:
            client.serpapi.search(q="x")
        self.assertEqual(caught.exception.details["phase"], "connect")
        self.assertEqual(len(sleeps), 2)

    def test_bad_base_urls_and_missing_settings_fail_at_construction(self) -> None:
        key = Ed25519PrivateKey.generate()
        for url in ["ftp://127.0.0.1", "127.0.0.1:8080", "http://", "http://user:pw@127.0.0.1", "http://h:99999"]:
            with self.assertRaises(ValueError, msg=url):
                GatewayClient(url, "agt_1", private_key=key)
        with self.assertRaises(ValueError):
            GatewayClient("http://127.0.0.1:1", None, private_key=key)
        with self.assertRaises(ValueError):
            GatewayClient("http://127.0.0.1:1", "agt_1", private_key=key, timeout=0)
        with self.assertRaises(ValueError):
            AdminClient("http://127.0.0.1:1", "")

    def test_tool_and_action_names_and_helper_options_are_checked_before_sending(self) -> None:
        client = GatewayClient("http://127.0.0.1:1", "agt_1", private_key=Ed25519PrivateKey.generate())
        with self.assertRaises(ValueError):
            client.tools.call("../admin", "x")
        with self.assertRaises(TypeError):
            client.tools.call("serpapi", "search", ["not", "a", "dict"])  # type: ignore[arg-type]
        with self.assertRaises(TypeError):
            client.http_fetch.get("http://x", retries=3)
        with self.assertRaises(ValueError):
            client.openai.chat([{"role": "user", "content": "hi"}], stream=True)
        for path in ["v1/tools", "http://elsewhere/v1/tools", "//elsewhere/v1/tools"]:
            with self.assertRaises(ValueError, msg=path):
                client.request("GET", path)
            with self.assertRaises(ValueError, msg=path):
                AdminClient("http://127.0.0.1:1", "k").request("GET", path)


if __name__ == "__main__":
    unittest.main()
