/**
 * Test doubles for the identity tests: an in-memory SigningKeyStore (the real stores pass their
 * own contract suite), a Map-backed `claimOnce`, a settable clock, and hand-built JWTs for the
 * refusals no honest library would produce.
 */
import assert from 'node:assert/strict'
import { createHmac } from 'node:crypto'
import type { ErrorCode } from '../errors/catalogue.ts'
import { GatewayError } from '../errors/gateway-error.ts'
import { type SigningKey, type SigningKeyStore, StoreConflictError } from '../store/types.ts'

/** A SigningKeyStore in a Map; every call returns copies, like the real stores. */
export function memorySigningKeyStore(): SigningKeyStore & { records: Map<string, SigningKey> } {
  const records = new Map<string, SigningKey>()
  const copy = (key: SigningKey): SigningKey => ({ ...key, publicJwk: { ...key.publicJwk } })
  return {
    records,
    async list() {
      return [...records.values()].sort((a, b) => a.createdAt - b.createdAt).map(copy)
    },
    async insert(key) {
      if (records.has(key.kid)) throw new StoreConflictError(`signing key ${key.kid} exists`)
      records.set(key.kid, copy(key))
    },
    async retireAllBut(kid, at) {
      for (const key of records.values()) if (key.kid !== kid && key.retiredAt === null) key.retiredAt = at
    },
    async deleteRetiredBefore(before) {
      let removed = 0
      for (const [kid, key] of records) {
        if (key.retiredAt !== null && key.retiredAt < before) {
          records.delete(kid)
          removed++
        }
      }
      return removed
    },
  }
}

/** A `claimOnce` over a Map that remembers every claim and the ttl it was made with. */
export function memoryClaimOnce(): {
  claimOnce(key: string, ttlMs: number): Promise<boolean>
  claims: Map<string, number>
} {
  const claims = new Map<string, number>()
  return {
    claims,
    async claimOnce(key, ttlMs) {
      if (claims.has(key)) return false
      claims.set(key, ttlMs)
      return true
    },
  }
}

/** A clock tests move by hand. */
export function testClock(start = Date.UTC(2030, 0, 1)): { now: () => number; advance(ms: number): void } {
  let at = start
  return {
    now: () => at,
    advance(ms) {
      at += ms
    },
  }
}

const part = (value: unknown) => Buffer.from(JSON.stringify(value), 'utf8').toString('base64url')

/** A compact JWS with any header and payload and the given signature bytes (none by default). */
export function craftJwt(header: object, payload: object, signature = ''): string {
  return `${part(header)}.${part(payload)}.${signature}`
}

/** An HS256 JWT keyed with `secret`: what an attacker makes from a public key's bytes. */
export function hs256Jwt(header: object, payload: object, secret: Buffer): string {
  const input = `${part({ ...header, alg: 'HS256' })}.${part(payload)}`
  return `${input}.${createHmac('sha256', secret).update(input).digest('base64url')}`
}

/** Assert that `promise` rejects with a GatewayError of `code` whose details.reason is `reason`. */
export async function assertRefused(
  promise: unknown,
  code: ErrorCode,
  reason: string,
  secret?: string,
): Promise<GatewayError> {
  let caught: unknown
  try {
    await promise
  } catch (err) {
    caught = err
  }
  assert.ok(caught instanceof GatewayError, `expected a GatewayError, got ${String(caught)}`)
  assert.equal(caught.code, code, caught.message)
  assert.deepEqual(caught.details, { reason }, caught.message)
  if (secret !== undefined) assert.ok(!caught.message.includes(secret), 'the message repeats the secret')
  return caught
}
