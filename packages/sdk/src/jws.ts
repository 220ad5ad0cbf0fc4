/**
 * Compact JWS with Ed25519 on WebCrypto (RFC 7515, RFC 8037): the client assertion and the DPoP
 * proofs are the only things this SDK signs, and both are small fixed shapes, so a JOSE library
 * would be weight without benefit. Works wherever `globalThis.crypto.subtle` has Ed25519.
 */

const encoder = new TextEncoder()

/** A WebCrypto key (named without the DOM lib, which Node-only builds do not load). */
export type SigningKey = Awaited<ReturnType<typeof crypto.subtle.importKey>>

/** A JSON Web Key (RFC 7517) as a plain object. */
export interface Jwk {
  kty?: string
  crv?: string
  kid?: string
  x?: string
  d?: string
  [member: string]: unknown
}

/** base64url without padding (RFC 7515 §2). */
export function base64url(bytes: Uint8Array): string {
  let binary = ''
  for (const byte of bytes) binary += String.fromCharCode(byte)
  return btoa(binary).replaceAll('+', '-').replaceAll('/', '_').replace(/=+$/, '')
}

/** Standard or url-safe base64 (padding optional) to bytes; throws on anything else. */
export function fromBase64(text: string): Uint8Array {
  const binary = atob(text.replaceAll('-', '+').replaceAll('_', '/'))
  const bytes = new Uint8Array(binary.length)
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i)
  return bytes
}

/** `base64url(SHA-256(text))`: the DPoP `ath` of an access token (RFC 9449 §4.2). */
export async function sha256Base64url(text: string): Promise<string> {
  return base64url(new Uint8Array(await crypto.subtle.digest('SHA-256', encoder.encode(text))))
}

/** Sign `payload` under `header` (which must name `alg: EdDSA`) with an Ed25519 private key. */
export async function signJws(key: SigningKey, header: object, payload: object): Promise<string> {
  const input = `${base64url(encoder.encode(JSON.stringify(header)))}.${base64url(encoder.encode(JSON.stringify(payload)))}`
  const signature = await crypto.subtle.sign('Ed25519', key, encoder.encode(input))
  return `${input}.${base64url(new Uint8Array(signature))}`
}
