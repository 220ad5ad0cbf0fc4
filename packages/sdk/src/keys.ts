/**
 * The agent's Ed25519 private key in the forms the gateway hands out: the key file written by
 * `4runr agent create` (`{agentId, kid, privateKeyJwk, gatewayUrl, issuer}`), the bare private JWK
 * that `POST /v1/agents` answers, the `/api/create-agent` answer (`{agent_id, kid, private_key,
 * private_key_jwk}`), and a PKCS#8 PEM. Imported once into a non-extractable WebCrypto key.
 * Error messages describe the form expected and never repeat what they were given.
 */
import { AuthError } from './errors.ts'
import { fromBase64, type Jwk, type SigningKey } from './jws.ts'

/** A private key: a JWK object, a PKCS#8 PEM, or the JSON text of a key file. */
export type PrivateKeyInput = Jwk | string

/** The public half, as DPoP proofs carry it (RFC 9449 §4.2). */
export interface PublicJwk {
  kty: 'OKP'
  crv: 'Ed25519'
  x: string
}

export interface AgentKey {
  signingKey: SigningKey
  publicJwk: PublicJwk
  /** From the key file or the JWK's `kid`: names the key in the assertion header. */
  kid: string | undefined
  /** From a key file: the agent the key belongs to. */
  agentId: string | undefined
  /** From a key file: the gateway issuer the key was made for (pinned). */
  issuer: string | undefined
}

function invalidKey(message: string, cause?: unknown): AuthError {
  return new AuthError({ code: 'invalid_key', message, status: 0, cause })
}

const pemPattern = /-----BEGIN PRIVATE KEY-----([A-Za-z0-9+/=\s]+)-----END PRIVATE KEY-----/

async function fromJwk(
  jwk: Record<string, unknown>,
): Promise<{ signingKey: SigningKey; publicJwk: PublicJwk }> {
  const { kty, crv, d, x } = jwk
  if (kty !== 'OKP' || crv !== 'Ed25519' || typeof d !== 'string' || typeof x !== 'string') {
    throw invalidKey('the private key must be an Ed25519 JWK (kty OKP, crv Ed25519, with d and x)')
  }
  try {
    const signingKey = await crypto.subtle.importKey('jwk', { kty, crv, d, x }, 'Ed25519', false, ['sign'])
    return { signingKey, publicJwk: { kty, crv, x } }
  } catch (err) {
    throw invalidKey('the Ed25519 JWK cannot be imported (d or x is not a valid key)', err)
  }
}

async function fromPem(pem: string): Promise<{ signingKey: SigningKey; publicJwk: PublicJwk }> {
  const body = pemPattern.exec(pem)?.[1]
  if (body === undefined) throw invalidKey('the PEM must be an unencrypted PKCS#8 "PRIVATE KEY"')
  let exported: Jwk
  try {
    // Extractable only long enough to read the public half; signing uses a non-extractable copy.
    const key = await crypto.subtle.importKey(
      'pkcs8',
      fromBase64(body.replace(/\s+/g, '')),
      'Ed25519',
      true,
      ['sign'],
    )
    exported = (await crypto.subtle.exportKey('jwk', key)) as Jwk
  } catch (err) {
    throw invalidKey('the PEM is not an Ed25519 PKCS#8 private key', err)
  }
  return fromJwk(exported)
}

const optionalString = (value: unknown) => (typeof value === 'string' && value !== '' ? value : undefined)

/** Import a private key given in any of the accepted forms. */
export async function importAgentKey(input: PrivateKeyInput): Promise<AgentKey> {
  if (typeof input === 'string') {
    const text = input.trim()
    if (text.startsWith('-----BEGIN'))
      return { ...(await fromPem(text)), kid: undefined, agentId: undefined, issuer: undefined }
    let parsed: unknown
    try {
      parsed = JSON.parse(text)
    } catch {
      throw invalidKey('the private key must be a JWK, a PKCS#8 PEM, or a key file from 4runr agent create')
    }
    if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
      throw invalidKey('the private key JSON must be an object')
    }
    return importAgentKey(parsed as Record<string, unknown>)
  }
  if (typeof input !== 'object' || input === null || Array.isArray(input)) {
    throw invalidKey('privateKey must be a JWK object or a PEM string')
  }
  const record = input as Record<string, unknown>
  // 4runr agent create's key file, then the /api/create-agent answer, then a bare JWK.
  const jwk = record['privateKeyJwk'] ?? record['private_key_jwk']
  if (typeof jwk === 'object' && jwk !== null) {
    return {
      ...(await fromJwk(jwk as Record<string, unknown>)),
      kid: optionalString(record['kid']) ?? optionalString((jwk as Record<string, unknown>)['kid']),
      agentId: optionalString(record['agentId']) ?? optionalString(record['agent_id']),
      issuer: optionalString(record['issuer']),
    }
  }
  if (typeof record['private_key'] === 'string') {
    return {
      ...(await fromPem(record['private_key'])),
      kid: optionalString(record['kid']),
      agentId: optionalString(record['agent_id']),
      issuer: undefined,
    }
  }
  return {
    ...(await fromJwk(record)),
    kid: optionalString(record['kid']),
    agentId: undefined,
    issuer: undefined,
  }
}

/** Read and import a key file. Node's `fs` is loaded only here, so browsers never need it. */
export async function readAgentKeyFile(path: string): Promise<AgentKey> {
  let text: string
  try {
    const { readFile } = await import('node:fs/promises')
    text = await readFile(path, 'utf8')
  } catch (err) {
    const code = (err as { code?: string }).code ?? 'unreadable'
    throw invalidKey(`cannot read key file ${path} (${code})`, err)
  }
  try {
    return await importAgentKey(text)
  } catch (err) {
    throw invalidKey(`key file ${path}: ${(err as Error).message}`, err)
  }
}
