/**
 * Sealing with the master key: AES-256-GCM with a random 96-bit nonce per message (NIST SP
 * 800-38D §8.2.2) and caller-chosen associated data, so a sealed value copied into another
 * record (another kid, another secret name) does not open there.
 *
 * Format: `v1.<base64url nonce>.<base64url ciphertext || 16-byte tag>`.
 */
import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto'

const version = 'v1'
const nonceBytes = 12
const tagBytes = 16
const keyBytes = 32
const b64url = /^[A-Za-z0-9_-]*$/

/** Why sealed data did not open. GCM cannot tell a wrong key from tampering, so neither can we. */
export type SealedDataReason = 'bad_format' | 'unauthentic'

/** Thrown by `open` when sealed data is malformed or fails authentication. */
export class SealedDataError extends Error {
  readonly reason: SealedDataReason

  constructor(reason: SealedDataReason, message: string) {
    super(message)
    this.name = 'SealedDataError'
    this.reason = reason
  }
}

function assertKey(masterKey: Buffer): void {
  // A key of another length is a wiring bug, not bad data: fail loudly rather than as a SealedDataError.
  if (masterKey.length !== keyBytes) throw new RangeError(`the master key must be ${keyBytes} bytes`)
}

function decode(part: string): Buffer | undefined {
  if (!b64url.test(part)) return undefined
  const bytes = Buffer.from(part, 'base64url')
  return bytes.toString('base64url') === part ? bytes : undefined
}

/** Encrypt and authenticate `plaintext` under `masterKey`, bound to `aad`. */
export function seal(masterKey: Buffer, plaintext: Buffer | string, aad: string): string {
  assertKey(masterKey)
  const nonce = randomBytes(nonceBytes)
  const cipher = createCipheriv('aes-256-gcm', masterKey, nonce, { authTagLength: tagBytes })
  cipher.setAAD(Buffer.from(aad, 'utf8'))
  const data = typeof plaintext === 'string' ? Buffer.from(plaintext, 'utf8') : plaintext
  const body = Buffer.concat([cipher.update(data), cipher.final(), cipher.getAuthTag()])
  return `${version}.${nonce.toString('base64url')}.${body.toString('base64url')}`
}

/** Decrypt what `seal` produced with the same key and `aad`; SealedDataError otherwise. */
export function open(masterKey: Buffer, sealed: string, aad: string): Buffer {
  assertKey(masterKey)
  const parts = typeof sealed === 'string' ? sealed.split('.') : []
  const nonce = parts.length === 3 && parts[0] === version ? decode(parts[1]!) : undefined
  const body = nonce === undefined ? undefined : decode(parts[2]!)
  if (nonce?.length !== nonceBytes || body === undefined || body.length < tagBytes) {
    throw new SealedDataError('bad_format', `sealed data is not in the ${version} format`)
  }
  const decipher = createDecipheriv('aes-256-gcm', masterKey, nonce, { authTagLength: tagBytes })
  decipher.setAAD(Buffer.from(aad, 'utf8'))
  decipher.setAuthTag(body.subarray(body.length - tagBytes))
  try {
    return Buffer.concat([decipher.update(body.subarray(0, body.length - tagBytes)), decipher.final()])
  } catch {
    throw new SealedDataError(
      'unauthentic',
      'sealed data failed authentication: a different master key, another context, or tampering',
    )
  }
}

/**
 * Read a master key written as base64 or base64url (padding optional, surrounding whitespace
 * ignored) that decodes to exactly 32 bytes. The error never repeats the value.
 */
export function parseMasterKey(text: string): Buffer {
  const trimmed = text.trim()
  // 32 bytes are 43 characters plus one '=' of padding; both alphabets are accepted.
  const candidate = /^[A-Za-z0-9+/_-]{43}=?$/.test(trimmed)
    ? trimmed.replace(/=$/, '').replaceAll('+', '-').replaceAll('/', '_')
    : undefined
  const key = candidate === undefined ? undefined : decode(candidate)
  if (key?.length !== keyBytes) {
    throw new Error(
      'the master key must be 32 random bytes written in base64 or base64url ' +
        '(44 characters, e.g. the output of `openssl rand -base64 32`)',
    )
  }
  return key
}
