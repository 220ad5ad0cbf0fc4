"""The admin client's round trips against the real gateway's admin listener."""

from __future__ import annotations

import unittest

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from support import fast_retry, gateway_env, unique

from runrgateway import AdminClient, AuthError, GatewayClient, GatewayError, PolicyError
from runrgateway.keys import load_key


class AdminRoundTrips(unittest.TestCase):
    @classmethod
    def setUpClass(cls) -> None:
        cls.env = gateway_env()
        cls.admin = AdminClient(cls.env["admin_url"], cls.env["admin_key"], retry=fast_retry())

    @classmethod
    def tearDownClass(cls) -> None:
        cls.admin.close()

    def test_creates_reads_updates_lists_and_deletes_an_agent(self) -> None:
        name = unique("py-admin")
        created = self.admin.agents.create(name, labels={"team": "sdk"}, roles=["reader"])
        self.assertEqual((created["name"], created["status"], created["roles"]), (name, "active", ["reader"]))
        self.assertIn("d", created["privateKeyJwk"])
        self.assertEqual(self.admin.agents.get(created["id"])["name"], name)
        updated = self.admin.agents.update(created["id"], status="disabled", labels={"team": "other"})
        self.assertEqual((updated["status"], updated["labels"]), ("disabled", {"team": "other"}))
        ids = []
        page = self.admin.agents.list(limit=500)
        ids.extend(agent["id"] for agent in page["agents"])
        self.assertIn(created["id"], ids)
        self.admin.agents.delete(created["id"])
        with self.assertRaises(GatewayError) as caught:
            self.admin.agents.get(created["id"])
        self.assertEqual((caught.exception.status, caught.exception.code), (404, "not_found"))

    def test_registers_an_agent_with_its_own_public_key_and_adds_a_second_key(self) -> None:
        key = load_key(private_key=Ed25519PrivateKey.generate())
        created = self.admin.agents.create(unique("py-ownkey"), labels={"team": "sdk"}, public_key_jwk=key.public_jwk())
        self.assertNotIn("privateKeyJwk", created)
        client = GatewayClient(self.env["url"], created["id"], private_key=key.private_key, retry=fast_retry())
        self.addCleanup(client.close)
        client.serpapi.search(q=unique("own key"))
        added = self.admin.agents.add_key(created["id"], not_after_old="2000-01-01T00:00:00Z")
        self.assertIn("d", added["privateKeyJwk"])
        # The old key is retired: new tokens need the new one.
        old = GatewayClient(self.env["url"], created["id"], private_key=key.private_key, retry=fast_retry())
        self.addCleanup(old.close)
        with self.assertRaises(AuthError) as caught:
            old.serpapi.search(q="x")
        # Without a kid the gateway tries every key in force; the retired one is not among them.
        self.assertEqual(caught.exception.reason, "bad_signature")
        new = GatewayClient(self.env["url"], created["id"], private_key=added["privateKeyJwk"], retry=fast_retry())
        self.addCleanup(new.close)
        self.assertEqual(new.serpapi.search(q=unique("new key")).metadata["upstreamStatus"], 200)

    def test_issues_an_admin_token_and_revokes_it_by_jti(self) -> None:
        agent = self.admin.agents.create(unique("py-admintoken"), labels={"team": "sdk"})
        issued = self.admin.agents.issue_token(agent["id"], scope="serpapi:search", ttl=60)
        self.assertEqual((issued["token_type"], issued["scope"]), ("Bearer", "serpapi:search"))
        revoked = self.admin.revocations.create(token=issued["access_token"], reason="test")
        self.assertTrue(revoked["jti"])
        self.assertIn(revoked["jti"], [r.get("jti") for r in self.admin.revocations.list()])
        with self.assertRaises(GatewayError) as caught:
            self.admin.revocations.create()
        self.assertEqual(caught.exception.status, 400)

    def test_puts_versions_explains_and_deletes_a_policy(self) -> None:
        name = unique("py-policy")
        policy = {"agents": {"labels": {"team": "py-policy"}}, "allow": [{"tool": "openai", "actions": ["chat"]}]}
        first = self.admin.policies.put(name, policy)
        self.assertEqual(first["version"], 1)
        with self.assertRaises(GatewayError) as caught:
            self.admin.policies.put(name, policy, expected_version=7)
        self.assertEqual(caught.exception.status, 409)
        self.admin.policies.put(name, {**policy, "description": "second"}, expected_version=1)
        self.assertEqual(self.admin.policies.get(name)["document"]["description"], "second")
        self.assertEqual(len(self.admin.policies.history(name)), 2)
        self.assertIn(name, [p["name"] for p in self.admin.policies.list()["policies"]])
        agent = self.admin.agents.create(unique("py-explained"), labels={"team": "py-policy"})
        decision = self.admin.policies.evaluate(agent["id"], tool="openai", action="chat", scope="openai:chat")
        self.assertEqual(decision["decision"], "allow")
        self.admin.policies.delete(name)
        denied = self.admin.policies.evaluate(agent["id"], tool="openai", action="chat", scope="openai:chat")
        self.assertEqual(denied["decision"], "deny")
        with self.assertRaises(GatewayError) as caught:
            self.admin.policies.put(name, {"allow": "not a list"})
        self.assertEqual((caught.exception.status, caught.exception.code), (400, "bad_request"))

    def test_sets_lists_and_deletes_a_secret_without_ever_reading_its_value(self) -> None:
        name = unique("py_secret").replace("-", "_")
        self.admin.secrets.set(name, "s3cr3t-value")
        listed = [s for s in self.admin.secrets.list() if s["name"] == name]
        self.assertEqual(len(listed), 1)
        self.assertNotIn("s3cr3t-value", repr(listed))
        self.admin.secrets.delete(name)
        with self.assertRaises(GatewayError) as caught:
            self.admin.secrets.delete(name)
        self.assertEqual(caught.exception.status, 404)

    def test_lists_and_decides_approvals(self) -> None:
        client = GatewayClient(key_file=self.env["key_file"], retry=fast_retry())
        self.addCleanup(client.close)
        try:
            client.gmail.send(to="ops@example.com", subject=unique("list"), text="x")
            self.fail("gmail.send should wait for approval")
        except PolicyError:
            raise
        except GatewayError as parked:
            approval_id = getattr(parked, "approval_id")
        pending = self.admin.approvals.list(status="pending", agent=client.agent_id)
        self.assertIn(approval_id, [a["id"] for a in pending["approvals"]])
        self.assertEqual(self.admin.approvals.reject(approval_id)["status"], "rejected")
        with self.assertRaises(GatewayError) as caught:
            self.admin.approvals.approve(approval_id)
        self.assertEqual((caught.exception.status, caught.exception.code), (409, "conflict"))

    def test_a_wrong_admin_key_is_an_auth_error(self) -> None:
        wrong = AdminClient(self.env["admin_url"], "not-the-admin-key", retry=fast_retry())
        self.addCleanup(wrong.close)
        with self.assertRaises(AuthError) as caught:
            wrong.agents.list()
        self.assertEqual(caught.exception.status, 401)
        self.assertNotIn("not-the-admin-key", str(caught.exception))


if __name__ == "__main__":
    unittest.main()
