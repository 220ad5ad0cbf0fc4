"""The agent client against a real gateway process (started by test/e2e/python-sdk.test.ts) with
the fake SerpAPI, OpenAI and Gmail upstreams: tokens, DPoP, every typed error the gateway answers,
approvals."""

from __future__ import annotations

import base64
import http.client
import json
import threading
import time
import unittest
from urllib.parse import urlsplit

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from support import add_fault, fast_retry, gateway_env, new_agent, unique

from runrgateway import (
    AdminClient,
    ApprovalRequired,
    AuthError,
    CircuitOpenError,
    GatewayClient,
    GatewayTimeoutError,
    PolicyError,
    QuotaError,
    RateLimitError,
    UpstreamError,
)
from runrgateway.errors import error_from_response


def claims(token: str) -> dict:
    part = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


class GatewayCase(unittest.TestCase):
    @classmethod
    def setUpClass(cls) -> None:
        cls.env = gateway_env()
        cls.admin = AdminClient(cls.env["admin_url"], cls.env["admin_key"])

    @classmethod
    def tearDownClass(cls) -> None:
        cls.admin.close()

    def client(self, **options) -> GatewayClient:
        options.setdefault("key_file", self.env["key_file"])
        options.setdefault("retry", fast_retry())
        client = GatewayClient(self.env["url"], options.pop("agent_id", None), **options)
        self.addCleanup(client.close)
        return client

    def agent_client(self, team: str = "sdk", **options) -> GatewayClient:
        """A client for a new agent made through the admin API."""
        created = new_agent(self.admin, "py", team, require_dpop=options.pop("require_dpop", None))
        return self.client(agent_id=created["id"], key_file=None, private_key=created["privateKeyJwk"], **options)


class Tokens(GatewayCase):
    def test_five_lines_make_a_tool_call_with_the_key_file_of_4runr_agent_create(self) -> None:
        client = GatewayClient(key_file=self.env["key_file"])  # url and agent id come from the file
        self.addCleanup(client.close)
        result = client.serpapi.search(q=unique("five lines"))
        self.assertIn("organic_results", result.data)
        self.assertEqual((result.metadata["tool"], result.metadata["action"]), ("serpapi", "search"))
        self.assertEqual(result.metadata["upstreamStatus"], 200)

    def test_grows_the_scope_with_each_tool_called_and_lists_what_it_may_use(self) -> None:
        client = self.client()
        client.serpapi.search(q=unique("scope"))
        self.assertEqual(claims(client.token())["scope"], "serpapi:search")
        client.openai.chat([{"role": "user", "content": "hello"}])
        self.assertEqual(claims(client.token())["scope"], "openai:chat serpapi:search")
        self.assertEqual(client.tokens.exchanges, 2)
        listed = {tool["name"]: [a["name"] for a in tool["actions"]] for tool in client.tools.list()}
        self.assertEqual(listed, {"serpapi": ["search"], "openai": ["chat"]})

    def test_a_tool_no_policy_grants_does_not_spoil_the_grown_scope(self) -> None:
        client = self.client()
        with self.assertRaises(PolicyError) as caught:
            client.openai.embeddings(input="x")
        self.assertEqual((caught.exception.status, caught.exception.code), (400, "invalid_scope"))
        client.serpapi.search(q=unique("after refusal"))
        self.assertEqual(claims(client.token())["scope"], "serpapi:search")

    def test_asks_for_exactly_the_fixed_scope_and_intent_it_was_given(self) -> None:
        client = self.client(scope=["serpapi:search", "http_fetch:get"], intent="research")
        client.serpapi.search(q=unique("fixed"))
        token = claims(client.token())
        self.assertEqual((token["scope"], token["intent"]), ("http_fetch:get serpapi:search", "research"))
        with self.assertRaises(PolicyError) as caught:
            client.gmail.profile()
        self.assertEqual((caught.exception.status, caught.exception.code), (403, "forbidden"))
        self.assertEqual(caught.exception.reason, "scope_missing")

    def test_refreshes_a_short_lived_token_before_it_expires(self) -> None:
        client = self.client(token_ttl=2)
        client.serpapi.search(q=unique("ttl"))
        first = client.token()
        self.assertLessEqual(claims(first)["exp"] - claims(first)["iat"], 2)
        time.sleep(1.7)  # past the refresh point (4/5 of the lifetime), before the expiry
        client.serpapi.search(q=unique("ttl"))
        self.assertNotEqual(client.token(), first)
        self.assertEqual(client.tokens.exchanges, 2)

    def test_exchanges_again_when_the_gateway_says_the_token_expired(self) -> None:
        client = self.client(token_ttl=1)
        client.serpapi.search(q=unique("expired"))
        # Pretend the clock said the token was still good, as a skewed clock would.
        client.tokens._token.refresh_at = float("inf")  # type: ignore[union-attr]
        time.sleep(1.2)
        self.assertEqual(client.serpapi.search(q=unique("expired")).metadata["upstreamStatus"], 200)
        self.assertEqual(client.tokens.exchanges, 2)

    def test_a_pem_key_from_the_original_api_works_too(self) -> None:
        with open(self.env["pem_file"]) as handle:
            pem = handle.read()
        client = self.client(agent_id=self.env["pem_agent"], key_file=None, private_key=pem)
        self.assertIn("organic_results", client.serpapi.search(q=unique("pem")).data)

    def test_tokens_are_shared_safely_by_threads(self) -> None:
        client = self.client()
        errors: list = []

        def work() -> None:
            try:
                client.serpapi.search(q=unique("thread"))
            except Exception as err:  # noqa: BLE001 - collected and asserted below
                errors.append(err)

        threads = [threading.Thread(target=work) for _ in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        self.assertEqual(errors, [])
        self.assertEqual(client.tokens.exchanges, 1)


class Dpop(GatewayCase):
    def test_binds_the_token_to_the_agent_key_and_proves_it_on_every_call(self) -> None:
        client = self.agent_client(require_dpop=True, dpop=True)
        for _ in range(3):
            client.serpapi.search(q=unique("dpop"))
        token = client.token()
        self.assertIn("jkt", claims(token)["cnf"])
        self.assertEqual(client.tokens.get(claims(token)["scope"])[1], "DPoP")
        fetched = client.http_fetch.get(url=f"{self.env['url']}/.well-known/jwks.json")
        self.assertEqual(fetched.data["status"], 200)

    def test_an_agent_that_must_bind_its_tokens_is_refused_without_dpop(self) -> None:
        client = self.agent_client(require_dpop=True)
        with self.assertRaises(AuthError) as caught:
            client.serpapi.search(q="x")
        self.assertEqual((caught.exception.status, caught.exception.code), (401, "invalid_dpop_proof"))
        self.assertEqual(caught.exception.reason, "missing_proof")

    def test_a_bound_token_stolen_without_the_key_is_useless(self) -> None:
        client = self.agent_client(dpop=True)
        client.serpapi.search(q=unique("stolen"))
        # The token alone, as a thief would send it: no proof of the key.
        parts = urlsplit(self.env["url"])
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=5)
        self.addCleanup(conn.close)
        for scheme in ("Bearer", "DPoP"):
            conn.request("POST", "/v1/tools/serpapi/search", body=b'{"q":"x"}', headers={
                "Authorization": f"{scheme} {client.token()}", "Content-Type": "application/json"})
            answer = conn.getresponse()
            error = error_from_response(answer.status, dict(answer.getheaders()), answer.read())
            self.assertIsInstance(error, AuthError)
            self.assertEqual((error.status, error.code), (401, "invalid_dpop_proof"))

class Refusals(GatewayCase):
    def test_an_unregistered_key_is_refused_with_invalid_grant(self) -> None:
        agent = new_agent(self.admin, "py-wrongkey")
        client = self.client(agent_id=agent["id"], key_file=None, private_key=Ed25519PrivateKey.generate())
        with self.assertRaises(AuthError) as caught:
            client.serpapi.search(q="x")
        self.assertEqual((caught.exception.status, caught.exception.code), (400, "invalid_grant"))
        self.assertIn(caught.exception.reason, ("bad_signature", "unknown_key"))
        self.assertTrue(caught.exception.request_id)

    def test_an_unknown_agent_and_a_foreign_issuer_are_refused(self) -> None:
        client = self.client(agent_id="agt_does_not_exist", key_file=None, private_key=Ed25519PrivateKey.generate())
        with self.assertRaises(AuthError) as caught:
            client.serpapi.search(q="x")
        self.assertEqual(caught.exception.reason, "unknown_agent")
        wrong_issuer = self.client(issuer="https://elsewhere.example")
        with self.assertRaises(AuthError) as caught:
            wrong_issuer.serpapi.search(q="x")
        self.assertEqual(caught.exception.reason, "wrong_audience")

    def test_a_policy_denial_is_a_policy_error_with_the_reason(self) -> None:
        client = self.client()
        with self.assertRaises(PolicyError) as caught:
            client.http_fetch.get(url="https://example.com/")
        self.assertEqual((caught.exception.status, caught.exception.code), (403, "policy_denied"))
        self.assertTrue(caught.exception.reason)

    def test_a_scope_no_policy_grants_is_refused_at_token_time(self) -> None:
        client = self.client(scope="gmail:send openai:embeddings")
        with self.assertRaises(PolicyError) as caught:
            client.gmail.send(to="a@example.com", subject="s", text="t")
        self.assertEqual((caught.exception.status, caught.exception.code), (400, "invalid_scope"))

    def test_the_loop_guard_is_a_rate_limit_error_with_retry_after_and_no_retry(self) -> None:
        client = self.client()
        q = unique("loop")
        client.serpapi.search(q=q)
        client.serpapi.search(q=q)
        started = time.monotonic()
        with self.assertRaises(RateLimitError) as caught:
            client.serpapi.search(q=q)
        self.assertLess(time.monotonic() - started, 1.0, "an hour's Retry-After is not slept through")
        self.assertEqual((caught.exception.status, caught.exception.code), (429, "rate_limited"))
        self.assertGreater(caught.exception.retry_after, 0)
        self.assertEqual(caught.exception.reason, "repeat_limit")

    def test_a_used_up_quota_is_a_quota_error_with_retry_after(self) -> None:
        client = self.agent_client(team="sdk-quota")
        client.serpapi.search(q=unique("quota"))
        client.serpapi.search(q=unique("quota"))
        with self.assertRaises(QuotaError) as caught:
            client.serpapi.search(q=unique("quota"))
        error = caught.exception
        self.assertEqual((error.status, error.code, error.reason), (429, "quota_exceeded", "quota_calls"))
        self.assertTrue(0 < error.retry_after <= 3600)
        self.assertEqual(error.details["limit"], 2)

    def test_an_upstream_failure_is_an_upstream_error(self) -> None:
        add_fault(self.env, "serpapi", {"kind": "status", "status": 500})
        with self.assertRaises(UpstreamError) as caught:
            self.client().serpapi.search(q=unique("fail"))
        self.assertEqual((caught.exception.status, caught.exception.code), (502, "upstream_error"))

    def test_an_open_circuit_breaker_is_a_circuit_open_error_with_retry_after(self) -> None:
        # The harness gives OpenAI a breaker that one failure opens for 2 s.
        client = self.client(retry=fast_retry(max_retries=0))
        hello = [{"role": "user", "content": "hello"}]
        add_fault(self.env, "openai", {"kind": "status", "status": 500})
        with self.assertRaises(UpstreamError):
            client.openai.chat(hello)
        with self.assertRaises(CircuitOpenError) as caught:
            client.openai.chat(hello)
        error = caught.exception
        self.assertEqual((error.status, error.code), (503, "circuit_open"))
        self.assertTrue(error.retry_after is not None and error.retry_after >= 1)
        # Waited out, the half-open probe succeeds and closes it again for the other tests.
        time.sleep(error.retry_after + 0.3)
        client.openai.chat(hello)

    def test_a_slow_upstream_is_a_gateway_timeout_error(self) -> None:
        add_fault(self.env, "serpapi", {"kind": "latency", "ms": 2500})
        with self.assertRaises(GatewayTimeoutError) as caught:
            self.client().serpapi.search(q=unique("slow"))
        self.assertEqual((caught.exception.status, caught.exception.code), (504, "upstream_timeout"))

    def test_a_revoked_agent_is_refused_on_its_next_call(self) -> None:
        client = self.agent_client()
        client.serpapi.search(q=unique("revoke"))
        self.admin.revocations.create(agent_id=client.agent_id, reason="sdk test")
        with self.assertRaises(AuthError) as caught:
            client.serpapi.search(q=unique("revoke"))
        self.assertEqual((caught.exception.status, caught.exception.code), (401, "token_revoked"))


class Approvals(GatewayCase):
    def test_a_parked_call_is_approved_then_replayed_once_by_wait(self) -> None:
        client = self.client()
        with self.assertRaises(ApprovalRequired) as caught:
            client.gmail.send(to="ops@example.com", subject=unique("approve"), text="hello")
        pending = caught.exception
        self.assertEqual((pending.status, pending.code), (202, "approval_required"))
        self.assertTrue(pending.approval_id.startswith("apr_"))
        self.assertEqual(pending.status_now(), "pending")
        timer = threading.Timer(0.3, lambda: self.admin.approvals.approve(pending.approval_id, note="ok"))
        timer.start()
        self.addCleanup(timer.cancel)
        result = pending.wait(timeout=10, interval=0.1)
        self.assertIn("id", result.data)
        self.assertEqual(self.admin.approvals.get(pending.approval_id)["status"], "used")

    def test_a_rejected_call_raises_a_policy_error_from_wait(self) -> None:
        client = self.client()
        with self.assertRaises(ApprovalRequired) as caught:
            client.gmail.send(to="ops@example.com", subject=unique("reject"), text="no")
        self.admin.approvals.reject(caught.exception.approval_id, note="not today")
        with self.assertRaises(PolicyError) as refused:
            caught.exception.wait(timeout=5, interval=0.1)
        self.assertEqual(refused.exception.reason, "approval_rejected")

    def test_wait_gives_up_after_its_timeout_while_still_pending(self) -> None:
        client = self.client()
        with self.assertRaises(ApprovalRequired) as caught:
            client.gmail.send(to="ops@example.com", subject=unique("pending"), text="later")
        with self.assertRaises(GatewayTimeoutError) as waited:
            caught.exception.wait(timeout=0.3, interval=0.1)
        self.assertEqual(waited.exception.code, "approval_timeout")


if __name__ == "__main__":
    unittest.main()
