/**
 * The secret store (DESIGN §6): tool credentials sealed with the master key (AES-256-GCM, a random
 * nonce per value, the master key's id stored with each value), per tool or per agent, write-only
 * through the admin API.
 *
 * `resolve` is on the tool-call path, so opened values are cached in memory for a short time. A
 * change made here empties the cache before the call that made it returns; a change made on
 * another instance arrives on the shared `secrets` channel (Redis pub/sub in a cluster) and empties
 * it there; a lost message costs at most `cacheTtlMs` of the old value.
 *
 * Nothing here logs or throws a value: errors name the secret and the agent only.
 */
import { randomBytes } from 'node:crypto'
import { LRUCache } from 'lru-cache'
import { GatewayError } from '../errors/gateway-error.ts'
import { open, seal } from '../identity/sealed.ts'
import type { SharedState, Unsubscribe } from '../state/types.ts'
import {
  type SecretMetadata,
  type SecretRecord,
  type SecretReseal,
  type SecretStore,
  StoreConflictError,
} from '../store/types.ts'
import { type MasterKeys, masterKeyId, writeDataDirMasterKey } from './master-keys.ts'

/** The shared channel on which instances tell each other that secrets changed. */
export const secretsChannel = 'secrets'

const namePattern = /^[A-Za-z0-9_.-]{1,128}$/
/** The largest value, in UTF-8 bytes. */
export const maxSecretBytes = 64 * 1024
const maxAgentIdLength = 128
const resealAttempts = 5

type Message = { type: 'changed'; name: string } | { type: 'master'; keyId: string }

/** What a master key rotation did. */
export interface MasterRotation {
  /** The key that seals every value now. */
  keyId: string
  /** The key that sealed new values before; equal to keyId when no new key was given. */
  previousKeyId: string
  /** How many values were sealed again. */
  resealed: number
  /** The file the new key was written to (the generated key file only). */
  keyFile: string | undefined
}

export interface SecretServiceOptions {
  store: SecretStore
  state: SharedState
  keys: MasterKeys
  /**
   * The generated `<dataDir>/master.key` when that is where the current key came from: a rotation
   * then writes the new key there. Undefined for keys the operator manages.
   */
  keyFile?: string
  /** Problems nobody is waiting for (a publish that failed, an unreadable message). */
  onError?: (err: unknown, what: string) => void
  /** How long an opened value is reused (default 30 s). */
  cacheTtlMs?: number
  /** How many (name, agent) answers are kept (default 10 000). */
  cacheMax?: number
  now?: () => number
}

/** Associated data: a sealed value opens only as the secret and agent it was written for. */
function aad(name: string, agentId: string | null): string {
  return JSON.stringify(['4runr secret', name, agentId])
}

function label(name: string, agentId: string | null): string {
  return agentId === null ? `"${name}"` : `"${name}" of agent ${agentId}`
}

function checkName(name: unknown): asserts name is string {
  if (typeof name !== 'string' || !namePattern.test(name)) {
    throw new GatewayError(
      'bad_request',
      'A secret name is 1 to 128 characters of letters, digits, "_", "." and "-".',
    )
  }
}

function checkAgentId(agentId: unknown): asserts agentId is string | null | undefined {
  if (agentId === null || agentId === undefined) return
  if (typeof agentId !== 'string' || agentId === '' || agentId.length > maxAgentIdLength) {
    throw new GatewayError('bad_request', 'An agent id is a string of 1 to 128 characters.')
  }
}

function checkValue(value: unknown): asserts value is string {
  if (typeof value !== 'string' || value === '') {
    throw new GatewayError('bad_request', 'A secret value is a non-empty string.')
  }
  if (Buffer.byteLength(value, 'utf8') > maxSecretBytes) {
    throw new GatewayError('bad_request', `A secret value is at most ${maxSecretBytes} bytes of UTF-8.`)
  }
}

// Cached for a secret that is not set, so a tool without its secret does not read the store on
// every call. No real value is empty: put refuses it.
const absent = ''

/** Encrypted tool secrets with a short in-memory cache of opened values. */
export class SecretService {
  private readonly store: SecretStore
  private readonly state: SharedState
  private readonly keys: MasterKeys
  private readonly keyFile: string | undefined
  private readonly onError: (err: unknown, what: string) => void
  private readonly cache: LRUCache<string, string>
  private readonly reading = new Map<string, Promise<string | undefined>>()
  /** Bumped by every invalidation: a read that started before one must not fill the cache. */
  private generation = 0
  /** Local puts in flight: a rotation waits for them, since they may have sealed under the old key. */
  private readonly writes = new Set<Promise<unknown>>()
  private rotating: Promise<unknown> = Promise.resolve()
  private readonly unsubscribe: Unsubscribe

  constructor(options: SecretServiceOptions) {
    this.store = options.store
    this.state = options.state
    this.keys = options.keys
    this.keyFile = options.keyFile
    this.onError = options.onError ?? (() => {})
    const now = options.now ?? (() => performance.now())
    this.cache = new LRUCache<string, string>({
      max: options.cacheMax ?? 10_000,
      ttl: options.cacheTtlMs ?? 30_000,
      // Read the clock on every check: a coarser resolution would outlive a test's fake clock.
      ttlResolution: 0,
      perf: { now },
    })
    this.unsubscribe = this.state.subscribe(secretsChannel, (text) => this.onMessage(text))
  }

  /** The id of the master key that seals new values. */
  get currentKeyId(): string {
    return this.keys.current.id
  }

  /** The value of `name` for `agentId`: the agent's own value first, else the tool-wide one. */
  resolve(name: string, agentId: string): Promise<string | undefined> {
    const cacheKey = `${name}\0${agentId}`
    const hit = this.cache.get(cacheKey)
    if (hit !== undefined) return Promise.resolve(hit === absent ? undefined : hit)
    let pending = this.reading.get(cacheKey)
    if (pending === undefined) {
      const generation = this.generation
      pending = this.read(name, agentId).then(
        (value) => {
          if (generation === this.generation) {
            this.cache.set(cacheKey, value ?? absent)
            this.reading.delete(cacheKey)
          }
          return value
        },
        (err: unknown) => {
          if (generation === this.generation) this.reading.delete(cacheKey)
          throw err
        },
      )
      this.reading.set(cacheKey, pending)
    }
    return pending
  }

  private async read(name: string, agentId: string): Promise<string | undefined> {
    const record = (await this.store.get(name, agentId)) ?? (await this.store.get(name, null))
    return record === undefined ? undefined : this.open(record).toString('utf8')
  }

  private open(record: SecretRecord): Buffer {
    const key = this.keys.get(record.keyId)
    if (key === undefined) {
      throw new GatewayError(
        'tool_unavailable',
        `The secret "${record.name}" cannot be opened: it is sealed under a master key this gateway does not hold.`,
        { cause: new Error(`secret ${label(record.name, record.agentId)} is sealed under ${record.keyId}`) },
      )
    }
    try {
      return open(key, record.sealedValue, aad(record.name, record.agentId))
    } catch (err) {
      throw new GatewayError('tool_unavailable', `The secret "${record.name}" cannot be opened.`, {
        cause: err,
      })
    }
  }

  /** Store `value` as `name`, tool-wide or (with `agentId`) for one agent, replacing any earlier value. */
  async put(name: string, value: string, agentId?: string | null): Promise<SecretMetadata> {
    checkName(name)
    checkValue(value)
    checkAgentId(agentId)
    const owner = agentId ?? null
    const { id, key } = this.keys.current
    const write = this.store.put({
      name,
      agentId: owner,
      sealedValue: seal(key, value, aad(name, owner)),
      keyId: id,
    })
    this.writes.add(write)
    let record: SecretRecord
    try {
      record = await write
    } finally {
      this.writes.delete(write)
    }
    await this.changed(name)
    const { sealedValue: _, ...metadata } = record
    return metadata
  }

  /** Delete one value (the tool-wide one without `agentId`); false when there was none. */
  async delete(name: string, agentId?: string | null): Promise<boolean> {
    checkName(name)
    checkAgentId(agentId)
    const deleted = await this.store.delete(name, agentId ?? null)
    if (deleted) await this.changed(name)
    return deleted
  }

  /** Every value's metadata, never a value: by name, the tool-wide value first. */
  list(): Promise<SecretMetadata[]> {
    return this.store.list()
  }

  /**
   * Seal every value under a new master key, or (no key, and no generated key file to write one
   * to) under the current key, for values still sealed under a previous one. Values keep opening
   * throughout: the replaced key stays available for what it sealed. With a generated key file,
   * no key means a new random one, written to the file before anything is sealed with it.
   */
  rotateMaster(newKey?: Buffer): Promise<MasterRotation> {
    const run = this.rotating.catch(() => undefined).then(() => this.rotate(newKey))
    this.rotating = run
    return run
  }

  private async rotate(given: Buffer | undefined): Promise<MasterRotation> {
    const previousKeyId = this.keys.current.id
    if (given !== undefined && masterKeyId(given) === previousKeyId) {
      throw new GatewayError('bad_request', 'The new master key is the one in use; give another.')
    }
    // Refuse before changing anything when some value could not be carried over.
    this.unopenable(await this.store.all())
    const next = given ?? (this.keyFile === undefined ? undefined : randomBytes(32))
    if (next !== undefined) {
      if (this.keyFile !== undefined) {
        await writeDataDirMasterKey(this.keyFile, next, [this.keys.current.key, ...this.keys.previous()])
      }
      this.keys.promote(next)
      // A put that sealed under the old key before the switch must be in the store before we read it.
      await Promise.allSettled([...this.writes])
    }
    const resealed = await this.resealAll()
    if (next !== undefined) await this.announce({ type: 'master', keyId: this.keys.current.id })
    return {
      keyId: this.keys.current.id,
      previousKeyId,
      resealed,
      keyFile: next === undefined ? undefined : this.keyFile,
    }
  }

  /** Throws when a record is sealed under a key this instance does not hold. */
  private unopenable(records: readonly SecretRecord[]): void {
    const missing = records.filter((r) => this.keys.get(r.keyId) === undefined)
    if (missing.length === 0) return
    const ids = [...new Set(missing.map((r) => r.keyId))].join(', ')
    throw new GatewayError(
      'conflict',
      `${missing.length} secret value(s) are sealed under master key ${ids}, which this gateway does not hold; ` +
        `start it with that key as RUNR_PREVIOUS_MASTER_KEY (or delete those secrets) and try again.`,
      {
        details: {
          keyIds: ids.split(', '),
          secrets: missing.map((r) => ({ name: r.name, agent: r.agentId })),
        },
      },
    )
  }

  /** Seal every value not under the current key again, all or nothing; retried when a value changed meanwhile. */
  private async resealAll(): Promise<number> {
    for (let attempt = 0; attempt < resealAttempts; attempt++) {
      const records = await this.store.all()
      this.unopenable(records)
      const { id, key } = this.keys.current
      const changes: SecretReseal[] = []
      for (const record of records) {
        if (record.keyId === id) continue
        let plain: Buffer
        try {
          plain = open(this.keys.get(record.keyId)!, record.sealedValue, aad(record.name, record.agentId))
        } catch (err) {
          throw new GatewayError(
            'conflict',
            `The secret ${label(record.name, record.agentId)} does not open with its master key ` +
              `${record.keyId} (damaged, or copied from another secret); set it again or delete it, then retry.`,
            { cause: err },
          )
        }
        changes.push({
          name: record.name,
          agentId: record.agentId,
          previousSealedValue: record.sealedValue,
          sealedValue: seal(key, plain, aad(record.name, record.agentId)),
          keyId: id,
        })
        plain.fill(0)
      }
      if (changes.length === 0) return 0
      try {
        await this.store.reseal(changes)
        return changes.length
      } catch (err) {
        if (!(err instanceof StoreConflictError)) throw err
      }
    }
    throw new GatewayError('conflict', 'Secrets kept changing during the master key rotation; run it again.')
  }

  /**
   * Ids of master keys that some stored value needs and this instance does not hold, with how
   * many values need each: checked at start, since such values can never be opened here.
   */
  async missingKeys(): Promise<Map<string, number>> {
    const missing = new Map<string, number>()
    for (const { keyId } of await this.store.list()) {
      if (this.keys.get(keyId) === undefined) missing.set(keyId, (missing.get(keyId) ?? 0) + 1)
    }
    return missing
  }

  private invalidate(): void {
    this.generation++
    this.cache.clear()
    this.reading.clear()
  }

  private async changed(name: string): Promise<void> {
    this.invalidate()
    await this.announce({ type: 'changed', name })
  }

  private async announce(message: Message): Promise<void> {
    // Best effort: the store has the change, and the cache ttl bounds how long others miss it.
    await this.state
      .publish(secretsChannel, JSON.stringify(message))
      .catch((err: unknown) => this.onError(err, 'could not tell the other instances that secrets changed'))
  }

  private onMessage(text: string): void {
    let message: Message
    try {
      message = JSON.parse(text) as Message
    } catch (err) {
      this.onError(err, 'unreadable message on the secrets channel')
      return
    }
    if (message.type === 'changed') this.invalidate()
    else if (message.type === 'master' && this.keys.get(message.keyId) === undefined) {
      this.onError(
        new Error(
          `another instance seals secrets with master key ${message.keyId}, which this instance does not hold: ` +
            'restart it with that key, the current one as RUNR_PREVIOUS_MASTER_KEY',
        ),
        'master key rotated elsewhere',
      )
    }
  }

  /** Stop listening for other instances' changes. */
  close(): void {
    this.unsubscribe()
    this.invalidate()
  }
}

/**
 * Open the secret service: refuses to start when stored values need a master key this gateway does
 * not hold (better said at start than as a failing tool call).
 */
export async function openSecretService(options: SecretServiceOptions): Promise<SecretService> {
  const service = new SecretService(options)
  const missing = await service.missingKeys().catch((err: unknown) => {
    service.close()
    throw err
  })
  if (missing.size > 0) {
    service.close()
    const which = [...missing].map(([id, count]) => `${id} (${count} value(s))`).join(', ')
    throw new Error(
      `the master key does not open the stored secrets: they need master key ${which}. ` +
        'Start with the key they were sealed with (RUNR_MASTER_KEY, secrets.masterKey or secrets.masterKeyFile), ' +
        'or keep it available as RUNR_PREVIOUS_MASTER_KEY.',
    )
  }
  return service
}
