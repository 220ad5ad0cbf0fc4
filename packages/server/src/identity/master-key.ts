/**
 * The master key that seals signing keys and secrets. It is looked up in a fixed order so an
 * operator can always tell which one is in force: `RUNR_MASTER_KEY`, `secrets.masterKey`,
 * `secrets.masterKeyFile`, then `<dataDir>/master.key`, created on the first start.
 */
import { randomBytes } from 'node:crypto'
import { chmod, link, mkdir, readFile, unlink, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { parseMasterKey } from './sealed.ts'

/** Name of the generated master key file inside the data directory. */
export const generatedMasterKeyFile = 'master.key'

export interface ResolvedMasterKey {
  key: Buffer
  /** `generated`: a new key was written on this start; the caller warns that it must be backed up. */
  source: 'env' | 'config' | 'file' | 'generated'
  /** The file the key was read from or written to. */
  file?: string
}

function parseFrom(text: string, where: string): Buffer {
  try {
    return parseMasterKey(text)
  } catch (err) {
    throw new Error(`${where}: ${(err as Error).message}`)
  }
}

async function readKeyFile(file: string, where: string): Promise<Buffer> {
  let text: string
  try {
    text = await readFile(file, 'utf8')
  } catch (err) {
    throw new Error(`${where}: cannot read ${file} (${(err as NodeJS.ErrnoException).code ?? 'error'})`)
  }
  return parseFrom(text, where)
}

/** Find the master key, creating `<dataDir>/master.key` (mode 0600) when none is configured. */
export async function resolveMasterKey(options: {
  env: NodeJS.ProcessEnv
  configured?: { masterKey?: string; masterKeyFile?: string }
  dataDir: string
}): Promise<ResolvedMasterKey> {
  const fromEnv = options.env['RUNR_MASTER_KEY']
  // An empty variable is how shells spell "unset".
  if (fromEnv !== undefined && fromEnv.trim() !== '') {
    return { key: parseFrom(fromEnv, 'RUNR_MASTER_KEY'), source: 'env' }
  }
  const { masterKey, masterKeyFile } = options.configured ?? {}
  // An empty configured key is a mistake (an unset ${env:…}), not a request to generate one.
  if (masterKey !== undefined) return { key: parseFrom(masterKey, 'secrets.masterKey'), source: 'config' }
  if (masterKeyFile !== undefined) {
    return {
      key: await readKeyFile(masterKeyFile, 'secrets.masterKeyFile'),
      source: 'file',
      file: masterKeyFile,
    }
  }
  const file = join(options.dataDir, generatedMasterKeyFile)
  const where = 'the generated master key file'
  try {
    return { key: parseFrom(await readFile(file, 'utf8'), `${where} ${file}`), source: 'file', file }
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err
  }
  await mkdir(options.dataDir, { recursive: true })
  const key = randomBytes(32)
  // Written aside, then linked into place: link fails if the file exists, so two instances
  // starting together never overwrite each other's key, and nobody reads a half-written file.
  const temp = `${file}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`
  await writeFile(temp, `${key.toString('base64')}\n`, { mode: 0o600, flag: 'wx' })
  try {
    await chmod(temp, 0o600)
    await link(temp, file)
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err
    return { key: await readKeyFile(file, where), source: 'file', file }
  } finally {
    await unlink(temp).catch(() => {})
  }
  return { key, source: 'generated', file }
}
