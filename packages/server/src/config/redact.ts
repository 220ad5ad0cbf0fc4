/**
 * The running config as `GET /v1/config` shows it: secrets replaced by "[redacted]". A value is
 * redacted when its key names a credential, when it came from `${env:…}`/`${file:…}` (which is
 * how secrets are meant to arrive), or when it is a URL with credentials in it.
 */
import { interpolatedPaths } from './load.ts'
import type { RawConfig } from './schema.ts'

const secretKey = /^(keys?|masterKey|secrets?|password|token|privateKey|apiKey|value)$/i
const redacted = '[redacted]'

// Credentials also travel in query strings (`?api_key=…`, `?token=…`, a presigned
// `?X-Amz-Signature=…`); a parameter whose name says so is redacted like a password.
const secretParam = /pass|pwd|secret|token|key|sig|auth|credential/i

function redactUrl(value: string): string {
  let url: URL
  try {
    url = new URL(value)
  } catch {
    return value
  }
  let changed = false
  if (url.username !== '' || url.password !== '') {
    url.username = url.username === '' ? '' : redacted
    url.password = url.password === '' ? '' : redacted
    changed = true
  }
  for (const name of new Set(url.searchParams.keys())) {
    if (!secretParam.test(name)) continue
    url.searchParams.set(name, redacted)
    changed = true
  }
  return changed ? url.toString() : value
}

/** A deep copy of `config` that is safe to show to an operator. */
export function redactConfig(config: RawConfig): unknown {
  const fromEnvOrFile = interpolatedPaths(config)
  const walk = (value: unknown, path: string, key: string): unknown => {
    if (secretKey.test(key) && value !== undefined && value !== null && typeof value !== 'object')
      return redacted
    if (fromEnvOrFile.has(path) && typeof value === 'string') return redacted
    if (Array.isArray(value)) {
      return secretKey.test(key)
        ? value.map(() => redacted)
        : value.map((v, i) => walk(v, `${path}[${i}]`, key))
    }
    if (value !== null && typeof value === 'object') {
      const out: Record<string, unknown> = {}
      for (const [k, v] of Object.entries(value)) out[k] = walk(v, path === '' ? k : `${path}.${k}`, k)
      return out
    }
    if (typeof value === 'string' && value.includes('://')) return redactUrl(value)
    return value
  }
  return walk(config, '', '')
}
