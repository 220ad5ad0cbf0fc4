/**
 * The gateway's own token-signing keys (DESIGN §5). Keys live in the Store with their private
 * half sealed under the master key (aad = kid), so every instance of a cluster signs with the
 * same key and publishes the same JWKS.
 *
 * A retired key keeps verifying, and stays in the JWKS, for `maxTtlMs + 60 s` after it retired:
 * long enough for the last token it signed to expire, with a minute for clock skew and for
 * instances that have not yet refreshed. Instances must therefore `refresh()` well within that
 * minute, or they keep signing with a key the others have retired.
 */
import { generateKeyPairSync } from 'node:crypto'
import { type CryptoKey, importJWK } from 'jose'
import { MasterKeys } from '../secrets/master-keys.ts'
import type { PublicJwk, SigningKey, SigningKeyStore } from '../store/types.ts'
import { jwkThumbprint } from './jwk.ts'
import { open, seal } from './sealed.ts'

/** How long past `retiredAt + maxTtlMs` a retired key still verifies. */
export const retiredKeyGraceMs = 60_000

/** A JWKS entry (RFC 7517 §5) for one of the gateway's signing keys. */
export interface SigningJwk extends PublicJwk {
  kid: string
  alg: 'EdDSA'
  use: 'sig'
}

export interface KeyRing {
  /** The longest token lifetime the grace period was sized for; issuers must not exceed it. */
  readonly maxTtlMs: number
  /** The key new tokens are signed with. */
  active(): { kid: string; privateKey: CryptoKey }
  /** The key that verifies tokens with header `kid`, or undefined when such tokens must be refused. */
  verificationKey(kid: string): CryptoKey | undefined
  /** The public keys `verificationKey` accepts, for `/.well-known/jwks.json`. */
  jwks(): { keys: SigningJwk[] }
  /** Make a new key the active one and retire the others now; returns the new kid. */
  rotate(): Promise<string>
  /** Rotate when the active key is older than `rotateEveryMs`; true when it did. */
  rotateIfDue(): Promise<boolean>
  /** Re-read the store, e.g. after another instance rotated. */
  refresh(): Promise<void>
  /** Delete keys whose grace has ended; returns how many. */
  prune(): Promise<number>
}

interface Entry {
  record: SigningKey
  publicKey: CryptoKey
}

function newestActive(records: readonly SigningKey[]): SigningKey | undefined {
  let best: SigningKey | undefined
  for (const r of records) {
    if (r.retiredAt !== null) continue
    // Ties (two instances inserting in the same millisecond) break on kid so every instance agrees.
    if (
      best === undefined ||
      r.createdAt > best.createdAt ||
      (r.createdAt === best.createdAt && r.kid > best.kid)
    ) {
      best = r
    }
  }
  return best
}

/** Load the signing keys from `store`, creating the first one when no key is active. */
export async function createKeyRing(options: {
  store: SigningKeyStore
  /** One key, or the secret store's key set: seals with the current key, opens with any of them. */
  masterKey: Buffer | MasterKeys
  rotateEveryMs: number
  maxTtlMs: number
  now?: () => number
}): Promise<KeyRing> {
  const { store, rotateEveryMs, maxTtlMs } = options
  const keys = options.masterKey instanceof MasterKeys ? options.masterKey : new MasterKeys(options.masterKey)
  // A rotation promotes a new key in the shared set: signing keys sealed before it open with the old one.
  const openSealed = (sealed: string, kid: string): Buffer => {
    let failure: unknown
    for (const key of [keys.current.key, ...keys.previous()]) {
      try {
        return open(key, sealed, kid)
      } catch (err) {
        failure = err
      }
    }
    throw failure
  }
  const now = options.now ?? Date.now
  let entries = new Map<string, Entry>()
  let current: { kid: string; privateKey: CryptoKey; createdAt: number } | undefined
  // Opened private keys by kid, so a refresh does not unseal the same key again.
  const privateKeys = new Map<string, CryptoKey>()

  const unseal = async (record: SigningKey): Promise<CryptoKey> => {
    let jwk: { kty?: unknown; crv?: unknown; x?: unknown; d?: unknown }
    try {
      jwk = JSON.parse(openSealed(record.sealedPrivateKey, record.kid).toString('utf8'))
    } catch {
      throw new Error(
        `the master key does not match the stored signing keys: signing key ${record.kid} cannot be unsealed. ` +
          'Start with the master key they were sealed with (RUNR_MASTER_KEY, secrets.masterKey or secrets.masterKeyFile).',
      )
    }
    if (
      jwk.kty !== 'OKP' ||
      jwk.crv !== 'Ed25519' ||
      jwk.x !== record.publicJwk.x ||
      typeof jwk.d !== 'string'
    ) {
      throw new Error(`signing key ${record.kid}: the sealed private key does not match its public key`)
    }
    return (await importJWK({ kty: 'OKP', crv: 'Ed25519', x: jwk.x, d: jwk.d }, 'EdDSA')) as CryptoKey
  }

  const generate = async (): Promise<SigningKey> => {
    const jwk = generateKeyPairSync('ed25519').privateKey.export({ format: 'jwk' })
    const x = jwk.x!
    const kid = jwkThumbprint({ kty: 'OKP', crv: 'Ed25519', x })
    const record: SigningKey = {
      kid,
      alg: 'EdDSA',
      publicJwk: { kty: 'OKP', crv: 'Ed25519', x, kid },
      sealedPrivateKey: seal(
        keys.current.key,
        JSON.stringify({ kty: 'OKP', crv: 'Ed25519', x, d: jwk.d }),
        kid,
      ),
      createdAt: now(),
      retiredAt: null,
    }
    await store.insert(record)
    privateKeys.set(
      kid,
      (await importJWK({ kty: 'OKP', crv: 'Ed25519', x, d: jwk.d! }, 'EdDSA')) as CryptoKey,
    )
    return record
  }

  // Builds the new state completely before swapping it in, so a failure leaves the old one serving.
  const install = async (listed: SigningKey[]): Promise<void> => {
    let records = listed
    let chosen = newestActive(records)
    if (chosen === undefined) {
      // Also reached after two instances rotated at once and retired each other's new key.
      chosen = await generate()
      records = [...records, chosen]
    }
    const next = new Map<string, Entry>()
    for (const record of records) {
      const publicKey =
        entries.get(record.kid)?.publicKey ?? ((await importJWK(record.publicJwk, 'EdDSA')) as CryptoKey)
      next.set(record.kid, { record, publicKey })
    }
    let privateKey = privateKeys.get(chosen.kid)
    if (privateKey === undefined) {
      privateKey = await unseal(chosen)
      privateKeys.set(chosen.kid, privateKey)
    }
    for (const kid of privateKeys.keys()) if (!next.has(kid)) privateKeys.delete(kid)
    entries = next
    current = { kid: chosen.kid, privateKey, createdAt: chosen.createdAt }
  }

  const usable = (record: SigningKey, at: number): boolean =>
    record.retiredAt === null || at < record.retiredAt + maxTtlMs + retiredKeyGraceMs

  const refresh = async (): Promise<void> => install(await store.list())

  const rotate = async (): Promise<string> => {
    const record = await generate()
    await store.retireAllBut(record.kid, now())
    await refresh()
    return record.kid
  }

  const initial = await store.list()
  // Every stored key must open: a wrong master key is best reported at start, not at the next rotation.
  const first = newestActive(initial)
  for (const record of initial) {
    const privateKey = await unseal(record)
    if (record === first) privateKeys.set(record.kid, privateKey)
  }
  await install(initial)

  return {
    maxTtlMs,
    active() {
      return { kid: current!.kid, privateKey: current!.privateKey }
    },
    verificationKey(kid) {
      const entry = entries.get(kid)
      return entry !== undefined && usable(entry.record, now()) ? entry.publicKey : undefined
    },
    jwks() {
      const at = now()
      const keys: SigningJwk[] = []
      for (const { record } of entries.values()) {
        if (!usable(record, at)) continue
        keys.push({
          kty: 'OKP',
          crv: 'Ed25519',
          x: record.publicJwk.x,
          kid: record.kid,
          alg: 'EdDSA',
          use: 'sig',
        })
      }
      return { keys: keys.reverse() }
    },
    rotate,
    async rotateIfDue() {
      // Re-read first: another instance may already have rotated, and rotating again would be wasted.
      await refresh()
      if (now() - current!.createdAt < rotateEveryMs) return false
      await rotate()
      return true
    },
    refresh,
    async prune() {
      const before = now() - maxTtlMs - retiredKeyGraceMs
      const removed = await store.deleteRetiredBefore(before)
      for (const [kid, { record }] of entries) {
        if (record.retiredAt !== null && record.retiredAt < before) entries.delete(kid)
      }
      return removed
    },
  }
}
