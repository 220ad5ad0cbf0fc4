/**
 * The running config as `GET /v1/config` shows it: secrets replaced by "[redacted]". A value is
 * redacted when its key names a credential, when it came from `${env:…}`/`${file:…}` (which is
 * how secrets are meant to arrive), or when it is a URL with credentials in it.
 */
import { interpolatedPaths } from './load.ts'
import type { RawConfig } from './schema.ts'

const secretKey = /^(keys?|masterKey|secrets?|password|token|privateKey|apiKey|value)$/i
const redacted = '[redacted]'

function redactUrl(value: string): string {
  try {
    const url = new URL(value)
    if (url.username === '' && url.password === '') return value
    url.username = url.username === '' ? '' : redacted
    url.password = url.password === '' ? '' : redacted
    return url.toString()
  } catch {
    return value
  }
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
