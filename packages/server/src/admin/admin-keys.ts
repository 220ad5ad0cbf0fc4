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
  const keys = [...configured]
  const fromEnv = env['RUNR_ADMIN_KEY']
  if (fromEnv !== undefined && fromEnv !== '') keys.push(fromEnv)
  const digests = keys.map(digest)
  let generated: string | undefined
  if (digests.length === 0) {
    const file = join(dataDir, generatedKeyFile)
    const stored = await readFile(file, 'utf8').catch(() => undefined)
    if (stored !== undefined && /^[0-9a-f]{64}$/.test(stored.trim())) {
      digests.push(Buffer.from(stored.trim(), 'hex'))
    } else {
      generated = `runr_admin_${randomBytes(24).toString('base64url')}`
      await mkdir(dataDir, { recursive: true })
      await writeFile(file, `${digest(generated).toString('hex')}\n`, { mode: 0o600 })
      await chmod(file, 0o600)
      digests.push(digest(generated))
    }
  }
  return {
    generated,
    count: digests.length,
    verify(presented) {
      const candidate = digest(presented)
      let match = false
      for (const d of digests) match = timingSafeEqual(candidate, d) || match
      return match
    },
  }
}
