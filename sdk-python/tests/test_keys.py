"""Loading agent keys in every form the gateway hands them out, and the JWS they sign."""

from __future__ import annotations

import base64
import json
import os
import tempfile
import unittest

from support import fast_retry  # noqa: F401  (puts the package on sys.path)

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from runrgateway.keys import b64url, load_key, sign_jws


def jwk_of(key: Ed25519PrivateKey) -> dict:
    d = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())
    x = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return {"kty": "OKP", "crv": "Ed25519", "d": b64url(d), "x": b64url(x), "kid": "k1"}


def decode(part: str) -> dict:
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


class LoadKey(unittest.TestCase):
    def setUp(self) -> None:
        self.key = Ed25519PrivateKey.generate()
        self.jwk = jwk_of(self.key)
        self.dir = tempfile.TemporaryDirectory()
        self.addCleanup(self.dir.cleanup)

    def write(self, name: str, text: str) -> str:
        path = os.path.join(self.dir.name, name)
        with open(path, "w") as handle:
            handle.write(text)
        return path

    def same_key(self, loaded) -> None:
        self.assertEqual(loaded.public_jwk()["x"], self.jwk["x"])

    def test_takes_a_jwk_dict_json_text_pem_bytes_and_a_key_object(self) -> None:
        pem = self.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        for value in [self.jwk, json.dumps(self.jwk), pem.decode(), pem, self.key]:
            self.same_key(load_key(private_key=value))
        self.assertEqual(load_key(private_key=self.jwk).kid, "k1")

    def test_reads_the_key_file_of_4runr_agent_create_with_its_agent_url_and_issuer(self) -> None:
        path = self.write("bot.key.json", json.dumps({
            "agentId": "agt_1", "name": "bot", "kid": "kid-9", "privateKeyJwk": self.jwk,
            "gatewayUrl": "http://127.0.0.1:8080", "issuer": "http://127.0.0.1:8080",
        }))
        loaded = load_key(key_file=path)
        self.same_key(loaded)
        self.assertEqual((loaded.agent_id, loaded.kid, loaded.gateway_url, loaded.issuer),
                         ("agt_1", "kid-9", "http://127.0.0.1:8080", "http://127.0.0.1:8080"))

    def test_never_shows_key_material_in_its_repr(self) -> None:
        self.assertNotIn(self.jwk["d"], repr(load_key(private_key=self.jwk)))

    def test_refuses_keys_that_are_not_ed25519_private_keys(self) -> None:
        public_only = {k: v for k, v in self.jwk.items() if k != "d"}
        cases = [
            {**self.jwk, "crv": "X25519"},
            {"kty": "EC", "crv": "P-256", "d": "AAAA"},
            public_only,
            {**self.jwk, "d": b64url(b"short")},
            {**self.jwk, "x": jwk_of(Ed25519PrivateKey.generate())["x"]},
            "not a key",
            "[1, 2]",
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        ]
        for value in cases:
            with self.assertRaises(ValueError, msg=str(value)):
                load_key(private_key=value)
        with self.assertRaises(TypeError):
            load_key(private_key=42)  # type: ignore[arg-type]

    def test_needs_exactly_one_source_and_names_an_unreadable_file(self) -> None:
        with self.assertRaises(ValueError):
            load_key()
        with self.assertRaises(ValueError):
            load_key(private_key=self.jwk, key_file="x")
        with self.assertRaisesRegex(ValueError, "cannot read key file"):
            load_key(key_file=os.path.join(self.dir.name, "missing.json"))
        with self.assertRaisesRegex(ValueError, "garbage.json"):
            load_key(key_file=self.write("garbage.json", "{"))


class SignJws(unittest.TestCase):
    def test_signs_a_compact_eddsa_jws_the_public_key_verifies(self) -> None:
        key = Ed25519PrivateKey.generate()
        token = sign_jws(key, {"typ": "JWT", "kid": "k"}, {"sub": "agt", "n": 1})
        header, payload, signature = token.split(".")
        self.assertEqual(decode(header), {"alg": "EdDSA", "typ": "JWT", "kid": "k"})
        self.assertEqual(decode(payload), {"sub": "agt", "n": 1})
        raw = base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4))
        key.public_key().verify(raw, f"{header}.{payload}".encode())
        self.assertNotIn("=", token)


if __name__ == "__main__":
    unittest.main()
