/**
 * The master keys the secret store seals with (DESIGN §6): the current key, which seals every new
 * value, and previous keys, which only open values not yet re-sealed. Each key is known by an id
 * derived from it, stored beside every value, so a rotation can tell which values still need work
 * and an instance can tell at start whether it holds every key the store needs.
 *
 * Previous keys come from `RUNR_PREVIOUS_MASTER_KEY` (one or more keys, comma or space separated)
 * and, when the current key is the generated `<dataDir>/master.key`, from `master.key.previous`
 * beside it, which a rotation writes before it replaces `master.key`.
 */
import { createHash, randomBytes } from 'node:crypto'
import { chmod, readFile, rename, unlink, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { generatedMasterKeyFile, resolveMasterKey } from '../identity/master-key.ts'
import { parseMasterKey } from '../identity/sealed.ts'

/** The environment variable naming keys that still open values but no longer seal them. */
export const previousMasterKeyEnv = 'RUNR_PREVIOUS_MASTER_KEY'

/** Suffix of the file beside the generated master key that keeps the keys it replaced. */
export const previousKeysSuffix = '.previous'

/**
 * A short public name for `key`: the first 96 bits of a domain-separated SHA-256. It reveals
 * nothing usable about a 256-bit random key and is the same on every instance.
 */
export function masterKeyId(key: Buffer): string {
  const digest = createHash('sha256').update('4runr master key id\0').update(key).digest()
  return `mk_${digest.subarray(0, 12).toString('base64url')}`
}

/** One master key with its id. */
export interface MasterKey {
  readonly id: string
  readonly key: Buffer
}

/** The current master key and the previous ones, by id. */
export class MasterKeys {
  private currentKey: MasterKey
  private readonly byId = new Map<string, Buffer>()

  constructor(current: Buffer, previous: readonly Buffer[] = []) {
    for (const key of previous) this.byId.set(masterKeyId(key), key)
    this.currentKey = { id: masterKeyId(current), key: current }
    this.byId.set(this.currentKey.id, current)
  }

  /** The key that seals new values. */
  get current(): MasterKey {
    return this.currentKey
  }

  /** The key with this id, current or previous. */
  get(id: string): Buffer | undefined {
    return this.byId.get(id)
  }

  /** Every key but the current one, most recently current first. */
  previous(): Buffer[] {
    return [...this.byId.entries()]
      .filter(([id]) => id !== this.currentKey.id)
      .map(([, key]) => key)
      .reverse()
  }

  /** Seal with `key` from now on; the key it replaces keeps opening what it sealed. */
  promote(key: Buffer): void {
    const id = masterKeyId(key)
    // Re-inserted last, so `previous()` lists the key just replaced first.
    this.byId.delete(this.currentKey.id)
    this.byId.set(this.currentKey.id, this.currentKey.key)
    this.byId.delete(id)
    this.byId.set(id, key)
    this.currentKey = { id, key }
  }
}

/** Where the current master key came from; decides how a rotation is made permanent. */
export type MasterKeySource =
  | { kind: 'env' }
  | { kind: 'config' }
  | { kind: 'keyFile'; file: string }
  /** `<dataDir>/master.key`, written by the gateway: a rotation rewrites it. */
  | { kind: 'dataDir'; file: string; generatedNow: boolean }

function parseKeys(text: string, where: string): Buffer[] {
  const keys: Buffer[] = []
  const words = text.split(/[\s,]+/).filter((w) => w !== '')
  for (const [i, word] of words.entries()) {
    try {
      keys.push(parseMasterKey(word))
    } catch (err) {
      // The message names the position, never the text.
      throw new Error(`${where}, key ${i + 1}: ${(err as Error).message}`)
    }
  }
  return keys
}

async function readPreviousFile(file: string): Promise<Buffer[]> {
  let text: string
  try {
    text = await readFile(file, 'utf8')
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return []
    throw new Error(`cannot read ${file} (${(err as NodeJS.ErrnoException).code ?? 'error'})`)
  }
  return parseKeys(text, file)
}

/**
 * The master keys in force: the current one as `resolveMasterKey` finds it (creating
 * `<dataDir>/master.key` on a first start) and the previous ones.
 */
export async function resolveMasterKeys(options: {
  env: NodeJS.ProcessEnv
  configured?: { masterKey?: string; masterKeyFile?: string }
  dataDir: string
}): Promise<{ keys: MasterKeys; source: MasterKeySource }> {
  const resolved = await resolveMasterKey(options)
  const previous: Buffer[] = []
  const fromEnv = options.env[previousMasterKeyEnv]
  if (fromEnv !== undefined && fromEnv.trim() !== '')
    previous.push(...parseKeys(fromEnv, previousMasterKeyEnv))
  let source: MasterKeySource
  if (resolved.source === 'env' || resolved.source === 'config') {
    source = { kind: resolved.source }
  } else if (options.configured?.masterKeyFile !== undefined) {
    source = { kind: 'keyFile', file: resolved.file! }
  } else {
    const file = resolved.file ?? join(options.dataDir, generatedMasterKeyFile)
    source = { kind: 'dataDir', file, generatedNow: resolved.source === 'generated' }
    previous.push(...(await readPreviousFile(`${file}${previousKeysSuffix}`)))
  }
  return { keys: new MasterKeys(resolved.key, previous), source }
}

/** Replace `file` with `text` (mode 0600) in one rename, so no reader sees a half-written key. */
async function replaceFile(file: string, text: string): Promise<void> {
  const temp = `${file}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`
  await writeFile(temp, text, { mode: 0o600, flag: 'wx' })
  try {
    // The umask cannot loosen it, but a pre-existing ACL default could: be explicit.
    await chmod(temp, 0o600)
    await rename(temp, file)
  } catch (err) {
    await unlink(temp).catch(() => {})
    throw err
  }
}

/**
 * Make `next` the generated master key in `file`, keeping `replaced` (the current key first) in
 * `file.previous`. The previous keys are written first: a crash in between leaves the old key
 * current and the new one unused, never a value sealed under a key no file holds.
 */
export async function writeDataDirMasterKey(
  file: string,
  next: Buffer,
  replaced: readonly Buffer[],
): Promise<void> {
  const previous = replaced.filter((key) => !key.equals(next))
  await replaceFile(
    `${file}${previousKeysSuffix}`,
    previous.map((key) => `${key.toString('base64')}\n`).join(''),
  )
  await replaceFile(file, `${next.toString('base64')}\n`)
}
