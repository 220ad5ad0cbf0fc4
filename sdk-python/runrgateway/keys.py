"""Agent keys: loading an Ed25519 private key and signing compact JWS with it (RFC 7515, RFC 8037).

Only EdDSA over Ed25519 is supported, the one algorithm the gateway accepts for assertions. The
private key never leaves this process: only signatures and the public JWK are sent.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import uuid
from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional, Union

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

__all__ = ["AgentKey", "load_key", "b64url", "sign_jws", "sha256_b64url"]

PrivateKeyInput = Union[str, bytes, Mapping[str, Any], Ed25519PrivateKey]


def b64url(data: bytes) -> str:
    """Base64url without padding (RFC 7515 §2)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def sha256_b64url(text: str) -> str:
    """The base64url SHA-256 of ``text``: the DPoP ``ath`` of an access token (RFC 9449 §4.2)."""
    return b64url(hashlib.sha256(text.encode("ascii")).digest())


@dataclass(frozen=True)
class AgentKey:
    """An agent's signing key, with what a key file may say about the agent it belongs to."""

    private_key: Ed25519PrivateKey
    kid: Optional[str] = None
    agent_id: Optional[str] = None
    gateway_url: Optional[str] = None
    issuer: Optional[str] = None

    def public_jwk(self) -> Dict[str, str]:
        """The public half as a JWK (only kty, crv, x: what a DPoP proof header carries)."""
        raw = self.private_key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        return {"kty": "OKP", "crv": "Ed25519", "x": b64url(raw)}

    def __repr__(self) -> str:  # never print key material
        return f"AgentKey(kid={self.kid!r}, agent_id={self.agent_id!r})"


def _from_jwk(jwk: Mapping[str, Any]) -> Ed25519PrivateKey:
    if jwk.get("kty") != "OKP" or jwk.get("crv") != "Ed25519":
        raise ValueError("the key must be an Ed25519 JWK (kty OKP, crv Ed25519)")
    d = jwk.get("d")
    if not isinstance(d, str):
        raise ValueError("the JWK has no private part (d): the gateway needs the agent's private key")
    try:
        raw = _b64url_decode(d)
    except (ValueError, TypeError) as err:
        raise ValueError("the JWK's d is not base64url") from err
    if len(raw) != 32:
        raise ValueError("the JWK's d is not a 32-byte Ed25519 private key")
    key = Ed25519PrivateKey.from_private_bytes(raw)
    x = jwk.get("x")
    if isinstance(x, str) and AgentKey(key).public_jwk()["x"] != x:
        raise ValueError("the JWK's x does not match its d")
    return key


def _from_pem(pem: bytes) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as err:
        raise ValueError("the PEM is not an unencrypted PKCS#8 private key") from err
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError("the PEM key is not an Ed25519 key")
    return key


def _from_text(text: str) -> AgentKey:
    stripped = text.strip()
    if stripped.startswith("-----BEGIN"):
        return AgentKey(_from_pem(stripped.encode("ascii", "replace")))
    try:
        parsed = json.loads(stripped)
    except ValueError as err:
        raise ValueError("the key is neither a PEM private key nor a JWK in JSON") from err
    if not isinstance(parsed, dict):
        raise ValueError("the key JSON must be an object")
    return _from_mapping(parsed)


def _from_mapping(data: Mapping[str, Any]) -> AgentKey:
    # A key file of `4runr agent create`: {agentId, kid, privateKeyJwk, gatewayUrl, issuer}.
    if isinstance(data.get("privateKeyJwk"), Mapping):
        jwk = data["privateKeyJwk"]

        def text(name: str) -> Optional[str]:
            value = data.get(name)
            return value if isinstance(value, str) and value else None

        return AgentKey(
            _from_jwk(jwk),
            kid=text("kid") or (jwk.get("kid") if isinstance(jwk.get("kid"), str) else None),
            agent_id=text("agentId"),
            gateway_url=text("gatewayUrl"),
            issuer=text("issuer"),
        )
    kid = data.get("kid")
    return AgentKey(_from_jwk(data), kid=kid if isinstance(kid, str) else None)


def load_key(
    private_key: Optional[PrivateKeyInput] = None,
    key_file: Optional[Union[str, "os.PathLike[str]"]] = None,
) -> AgentKey:
    """Load the agent key from exactly one of ``private_key`` (a JWK dict, JWK JSON, PEM text or
    bytes, or an ``Ed25519PrivateKey``) and ``key_file`` (a file holding any of those, or the key
    file written by ``4runr agent create``)."""
    if (private_key is None) == (key_file is None):
        raise ValueError("give exactly one of private_key= and key_file=")
    if key_file is not None:
        try:
            with open(key_file, "rb") as handle:
                raw = handle.read()
        except OSError as err:
            raise ValueError(f"cannot read key file {os.fspath(key_file)}: {err.strerror}") from err
        try:
            return _from_text(raw.decode("utf-8"))
        except UnicodeDecodeError as err:
            raise ValueError(f"key file {os.fspath(key_file)} is not text") from err
        except ValueError as err:
            raise ValueError(f"key file {os.fspath(key_file)}: {err}") from err
    if isinstance(private_key, Ed25519PrivateKey):
        return AgentKey(private_key)
    if isinstance(private_key, bytes):
        return _from_text(private_key.decode("utf-8", "replace"))
    if isinstance(private_key, str):
        return _from_text(private_key)
    if isinstance(private_key, Mapping):
        return _from_mapping(private_key)
    raise TypeError("private_key must be a JWK dict, PEM or JWK text, or an Ed25519PrivateKey")


def sign_jws(key: Ed25519PrivateKey, header: Mapping[str, Any], claims: Mapping[str, Any]) -> str:
    """A compact JWS (RFC 7515 §7.1) over JSON ``claims``, signed with EdDSA (RFC 8037 §3.1)."""
    protected = b64url(json.dumps({"alg": "EdDSA", **header}, separators=(",", ":")).encode("utf-8"))
    payload = b64url(json.dumps(claims, separators=(",", ":")).encode("utf-8"))
    signing_input = f"{protected}.{payload}".encode("ascii")
    return f"{protected}.{payload}.{b64url(key.sign(signing_input))}"


def new_jti() -> str:
    """A unique JWT id: the gateway refuses a replayed assertion or proof jti."""
    return uuid.uuid4().hex
