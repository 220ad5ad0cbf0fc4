/**
 * Checkpoint signatures (Ed25519, with the gateway's token-signing key) and the attestation that
 * makes a stored public key trustworthy. The public half of each checkpoint key is kept in
 * audit_keys, after the signing key itself is pruned, sealed under the master key (AES-GCM with
 * the kid as associated data): someone with database access can insert a key of their own, but
 * cannot attest it, so a re-signed chain does not verify.
 */
import { createPublicKey, type KeyObject as Key, KeyObject, sign, verify } from 'node:crypto'
import type { CryptoKey } from 'jose'
import { open, seal } from '../identity/sealed.ts'
import { canonicalJson } from '../policy/guards/args-shape.ts'
import type { MasterKeys } from '../secrets/master-keys.ts'
import type { AuditKey, Checkpoint } from './ledger-store.ts'

/** The bytes a checkpoint signature covers. */
function payload(c: Omit<Checkpoint, 'signature'>): Buffer {
  return Buffer.from(
    canonicalJson({ v: 1, instance: c.instance, seq: c.seq, hash: c.hash, time: c.time, kid: c.kid }),
  )
}

const aad = (kid: string) => `4runr audit key:${kid}`

/** Sign the chain head (`seq`, `hash`) of `instance`. */
export function signCheckpoint(
  head: { instance: string; seq: number; hash: string; time: number },
  key: { kid: string; privateKey: CryptoKey },
): Checkpoint {
  const unsigned = { ...head, kid: key.kid }
  const signature = sign(null, payload(unsigned), KeyObject.from(key.privateKey)).toString('base64url')
  return { ...unsigned, signature }
}

/** The stored form of the key `kid` with public half `x`, attested under the current master key. */
export function attestKey(kid: string, x: string, keys: MasterKeys, now: number): AuditKey {
  return { kid, x, attestation: seal(keys.current.key, x, aad(kid)), createdAt: now }
}

/**
 * Which master key attests `key`: 'current', 'previous' (still authentic, to be re-sealed), or
 * undefined when no master key opens it to its own public half.
 */
export function attestedBy(key: AuditKey, keys: MasterKeys): 'current' | 'previous' | undefined {
  const candidates: Array<[Buffer, 'current' | 'previous']> = [
    [keys.current.key, 'current'],
    ...keys.previous().map((k): [Buffer, 'previous'] => [k, 'previous']),
  ]
  for (const [master, which] of candidates) {
    try {
      if (open(master, key.attestation, aad(key.kid)).toString('utf8') === key.x) return which
    } catch {
      // not this master key
    }
  }
  return undefined
}

/** The public key object for an attested key. */
export function publicKeyOf(key: AuditKey): Key {
  return createPublicKey({ key: { kty: 'OKP', crv: 'Ed25519', x: key.x }, format: 'jwk' })
}

/** True when `checkpoint` carries a valid signature by `publicKey`. */
export function checkpointSignatureValid(checkpoint: Checkpoint, publicKey: Key): boolean {
  try {
    return verify(null, payload(checkpoint), publicKey, Buffer.from(checkpoint.signature, 'base64url'))
  } catch {
    return false
  }
}
