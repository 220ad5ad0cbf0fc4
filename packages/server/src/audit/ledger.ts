/**
 * The ledger writer. Appending is cheap on the hot path: the event object is pushed onto the open
 * batch and nothing else happens until the batch is flushed, 50 ms later, in one transaction that
 * chains and hashes it. `sync` durability uses the same group commit, but the caller waits for
 * it (and the batch is flushed at once rather than after 50 ms). Every `checkpointEvery` entries,
 * and on close, the head is signed.
 *
 * A batch that cannot be written stays queued and is retried; meanwhile `problem()` names the
 * failure, so the gateway can refuse calls (audit.onFailure: refuse) and /ready can say why.
 */
import { createPublicKey, KeyObject } from 'node:crypto'
import type { CryptoKey } from 'jose'
import type { MasterKeys } from '../secrets/master-keys.ts'
import type { AuditEvent } from './entry.ts'
import type { Checkpoint, LedgerStore } from './ledger-store.ts'
import type { AuditSettings } from './settings.ts'
import { attestedBy, attestKey, signCheckpoint } from './signing.ts'

/** How long an entry waits for its group commit in batched mode. */
export const flushMs = 50
const retryMs = 1000
/** Entries kept while the store refuses writes; beyond this the oldest are dropped (and counted). */
const maxBacklog = 100_000
/** Entries per transaction at most. */
const maxBatch = 5000
const dayMs = 86_400_000

export interface LedgerDeps {
  store: LedgerStore
  /** The running settings (durability, onFailure and checkpointEvery follow reloads). */
  settings(): AuditSettings
  /** This instance's chain, fixed for the life of the process. */
  instance: string
  /** The gateway's active signing key. */
  signingKey(): { kid: string; privateKey: CryptoKey }
  masterKeys: MasterKeys
  onError(err: unknown, what: string): void
  now?(): number
}

export interface Ledger {
  readonly instance: string
  /** Queue an event for the next group commit (batched durability). */
  append(event: AuditEvent): void
  /**
   * Queue an event and resolve once it is committed (sync durability); rejects when it was not.
   * Without an event: resolve once everything queued so far is committed.
   */
  commit(event?: AuditEvent): Promise<void>
  /** Why the ledger cannot be written right now, or undefined while it can. */
  problem(): string | undefined
  /** Write everything queued now. */
  flush(): Promise<void>
  /** Sign the current head unless it is signed already. */
  checkpoint(): Promise<Checkpoint | undefined>
  /** Apply audit.retainDays now; returns how many entries were removed. */
  prune(): Promise<number>
  /** Flush everything, sign the head, and stop. */
  close(): Promise<void>
}

interface Waiter {
  resolve(): void
  reject(err: unknown): void
}

/** A reason safe to show on /ready: the database's message, without any statement text. */
function reasonOf(err: unknown): string {
  const message = err instanceof Error ? err.message : String(err)
  return message.split('\n')[0]!.slice(0, 200)
}

export async function createLedger(deps: LedgerDeps): Promise<Ledger> {
  const { store, instance, masterKeys } = deps
  const now = deps.now ?? Date.now
  let queue: AuditEvent[] = []
  let waiters: Array<{ event: AuditEvent | undefined; waiter: Waiter }> = []
  let timer: NodeJS.Timeout | undefined
  let flushing: Promise<void> | undefined
  let failure: string | undefined
  let dropped = 0
  let closed = false
  let lastSigned = (await store.checkpoints(instance)).at(-1)?.seq ?? 0
  const knownKeys = new Set<string>()

  // Keys attested under a master key that has since been replaced are sealed again under the
  // current one, while the previous key is still at hand.
  for (const key of await store.keys()) {
    const by = attestedBy(key, masterKeys)
    if (by === 'previous')
      await store.reattest(key.kid, attestKey(key.kid, key.x, masterKeys, now()).attestation)
    if (by !== undefined) knownKeys.add(key.kid)
  }

  const signHead = async (head: { seq: number; hash: string }): Promise<Checkpoint | undefined> => {
    if (head.seq <= lastSigned) return undefined
    const key = deps.signingKey()
    if (!knownKeys.has(key.kid)) {
      const x = createPublicKey(KeyObject.from(key.privateKey)).export({ format: 'jwk' }).x!
      await store.addKey(attestKey(key.kid, x, masterKeys, now()))
      knownKeys.add(key.kid)
    }
    const checkpoint = signCheckpoint({ instance, seq: head.seq, hash: head.hash, time: now() }, key)
    await store.addCheckpoint(checkpoint)
    lastSigned = Math.max(lastSigned, head.seq)
    return checkpoint
  }

  const flushOnce = async (): Promise<void> => {
    // A backlog (after the store came back) is written in bounded transactions: SQLite commits
    // on the event loop, and one huge batch would stall every request meanwhile.
    const batch = queue.length > maxBatch ? queue.splice(0, maxBatch) : queue
    if (batch === queue) queue = []
    const held = waiters
    waiters = []
    // Events whose callers wait (sync) are written with the batch, but never retried: a caller
    // told that its entry failed answers with an error, and records that answer instead.
    let events = batch
    if (held.length > 0) {
      events = batch.slice()
      for (const h of held) if (h.event !== undefined) events.push(h.event)
    }
    if (events.length === 0) {
      for (const h of held) h.waiter.resolve()
      return
    }
    let entries: Awaited<ReturnType<LedgerStore['append']>>
    try {
      entries = await store.append(instance, events)
    } catch (err) {
      if (failure === undefined) deps.onError(err, 'the audit ledger cannot be written')
      failure = reasonOf(err)
      queue = batch.concat(queue)
      if (queue.length > maxBacklog) {
        dropped += queue.length - maxBacklog
        queue = queue.slice(queue.length - maxBacklog)
      }
      for (const h of held) h.waiter.reject(err)
      return
    }
    failure = undefined
    for (const h of held) h.waiter.resolve()
    const first = entries[0]!.seq
    const last = entries.at(-1)!
    const every = deps.settings().checkpointEvery
    if (Math.floor(last.seq / every) > Math.floor((first - 1) / every)) {
      await signHead(last).catch((err: unknown) => deps.onError(err, 'signing an audit checkpoint failed'))
    }
  }

  const run = (): void => {
    timer = undefined
    flushing = flushOnce().finally(() => {
      flushing = undefined
      if (!closed && (queue.length > 0 || waiters.length > 0))
        schedule(
          failure !== undefined ? retryMs : waiters.length > 0 || queue.length >= maxBatch ? 0 : flushMs,
        )
    })
  }

  function schedule(delay: number): void {
    if (flushing !== undefined) return
    if (timer !== undefined) {
      if (delay > 0) return
      clearTimeout(timer)
    }
    timer = setTimeout(run, delay)
  }

  /** Write what is queued now, in as many transactions as it takes, unless the store refuses. */
  const flush = async (): Promise<void> => {
    let rounds = Math.max(1, Math.ceil((queue.length + waiters.length) / maxBatch))
    while (rounds-- > 0) {
      while (flushing !== undefined) await flushing
      if (timer !== undefined) clearTimeout(timer)
      timer = undefined
      flushing = flushOnce().finally(() => {
        flushing = undefined
      })
      await flushing
      if (failure !== undefined) return
    }
  }

  return {
    instance,
    append(event) {
      queue.push(event)
      if (!closed) schedule(failure === undefined ? flushMs : retryMs)
    },
    commit(event) {
      return new Promise<void>((resolve, reject) => {
        waiters.push({ event, waiter: { resolve, reject } })
        if (closed) void flush()
        // While the store refuses, commits wait for the next retry with the queue instead of each
        // starting a write of their own.
        else schedule(failure === undefined ? 0 : retryMs)
      })
    },
    problem() {
      if (failure === undefined) return undefined
      const lost = dropped === 0 ? '' : `; ${dropped} entries dropped`
      return `the audit ledger cannot be written: ${failure} (${queue.length} entries waiting${lost})`
    },
    flush,
    async checkpoint() {
      await flush()
      const head = await store.head(instance)
      return head === undefined ? undefined : signHead(head)
    },
    async prune() {
      const days = deps.settings().retainDays
      if (days === undefined) return 0
      const cutoff = now() - days * dayMs
      let removed = 0
      for (const chain of await store.instances()) {
        // The newest checkpoint signed before the cutoff: every entry it covers is older still.
        const anchor = (await store.checkpoints(chain)).filter((c) => c.time < cutoff).at(-1)
        if (anchor !== undefined) removed += await store.prune(chain, anchor.seq)
      }
      return removed
    },
    async close() {
      if (closed) return
      closed = true
      await flush()
      if (queue.length > 0)
        deps.onError(new Error(failure), `${queue.length} audit entries could not be written`)
      const head = await store.head(instance).catch(() => undefined)
      if (head !== undefined)
        await signHead(head).catch((err: unknown) =>
          deps.onError(err, 'signing the final audit checkpoint failed'),
        )
      await store.close()
    },
  }
}
