/**
 * Admin API keys (DESIGN §3, §18). Keys are held only as SHA-256 digests; a presented key is
 * hashed and compared with every digest in constant time, so neither timing nor an early exit
 * tells an attacker how close a guess was.
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto'
import { chmod, mkdir, readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'

export interface AdminKeys {
  /** True when `presented` is one of the admin keys. */
  verify(presented: string): boolean
  /** The key generated on this start, to print once; undefined otherwise. */
  readonly generated: string | undefined
  readonly count: number
  /**
   * The same RUNR_ADMIN_KEY and generated key with `configured` as the configured keys, so a
   * reload that rotates `gateway.admin.keys` takes effect (a removed key stops working).
   */
  withConfigured(configured: readonly string[]): AdminKeys
}

function digest(key: string): Buffer {
  return createHash('sha256').update(key, 'utf8').digest()
}

/** File in the data directory holding the digest of the generated key. */
export const generatedKeyFile = 'admin-key.sha256'

/**
 * Resolve the admin keys: RUNR_ADMIN_KEY (always a key when set), the configured keys, and, when
 * there are none at all, a key generated on the first start whose digest is kept in `dataDir`.
 */
export async function resolveAdminKeys(
  configured: readonly string[],
  env: NodeJS.ProcessEnv,
  dataDir: string,
): Promise<AdminKeys> {
  // Keys that do not come from the config file: they survive every reload.
  const fixed: Buffer[] = []
  const fromEnv = env['RUNR_ADMIN_KEY']
  if (fromEnv !== undefined && fromEnv !== '') fixed.push(digest(fromEnv))
  let generated: string | undefined
  if (fixed.length === 0 && configured.length === 0) {
    const file = join(dataDir, generatedKeyFile)
    const stored = await readFile(file, 'utf8').catch(() => undefined)
    if (stored !== undefined && /^[0-9a-f]{64}$/.test(stored.trim())) {
      fixed.push(Buffer.from(stored.trim(), 'hex'))
    } else {
      generated = `runr_admin_${randomBytes(24).toString('base64url')}`
      await mkdir(dataDir, { recursive: true })
      await writeFile(file, `${digest(generated).toString('hex')}\n`, { mode: 0o600 })
      await chmod(file, 0o600)
      fixed.push(digest(generated))
    }
  }
  const build = (keys: readonly string[], shown: string | undefined): AdminKeys => {
    const digests = [...keys.map(digest), ...fixed]
    return {
      generated: shown,
      count: digests.length,
      verify(presented) {
        const candidate = digest(presented)
        let match = false
        for (const d of digests) match = timingSafeEqual(candidate, d) || match
        return match
      },
      // Emptying the list would lock every operator out until a restart: keep the keys there are.
      withConfigured: (next) => build(next.length === 0 && fixed.length === 0 ? keys : next, undefined),
    }
  }
  return build(configured, generated)
}
