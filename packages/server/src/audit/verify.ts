/**
 * Chain verification (DESIGN §13): recompute every hash of a chain from its anchor, compare each
 * entry with its predecessor and with the signed checkpoints, and check each checkpoint's
 * signature with an attested key. The report names the first broken entry of each chain.
 *
 * What each tampering looks like here:
 * - an edited field: the entry's hash no longer matches its content;
 * - a deleted entry: a gap in seq, or (when the rows after it were renumbered) a prevHash that
 *   no longer matches its predecessor;
 * - an inserted or reordered entry: a seq or hash that no longer matches its position;
 * - a chain recomputed from the edit onwards: the first signed checkpoint after it disagrees;
 * - entries deleted from the end: a signed checkpoint past the last entry.
 */
import type { MasterKeys } from '../secrets/master-keys.ts'
import { type AuditEntry, entryHash, genesisHash } from './entry.ts'
import type { Checkpoint, LedgerStore } from './ledger-store.ts'
import { attestedBy, checkpointSignatureValid, publicKeyOf } from './signing.ts'

/** The first problem found in a chain. */
export interface Broken {
  seq: number
  reason: string
}

export interface ChainReport {
  instance: string
  ok: boolean
  /** Entries checked. */
  entries: number
  firstSeq: number | null
  lastSeq: number | null
  checkpoints: number
  /** The last signed checkpoint's seq (0 when none). */
  signedThrough: number
  /** Entries after the last checkpoint: consistent, but covered by no signature yet. */
  unsigned: number
  broken?: Broken
}

export interface VerifyReport {
  ok: boolean
  chains: ChainReport[]
}

const pageSize = 1000

/** Verify every chain (or one, with `instance`), from `since` on when given. */
export async function verifyLedger(
  store: LedgerStore,
  masterKeys: MasterKeys,
  options: { instance?: string; since?: number } = {},
): Promise<VerifyReport> {
  const keys = new Map<string, ReturnType<typeof publicKeyOf>>()
  for (const key of await store.keys()) {
    if (attestedBy(key, masterKeys) !== undefined) keys.set(key.kid, publicKeyOf(key))
  }
  const instances = options.instance === undefined ? await store.instances() : [options.instance]
  const chains: ChainReport[] = []
  for (const instance of instances) chains.push(await verifyChain(store, instance, keys, options.since))
  return { ok: chains.every((c) => c.ok), chains }
}

async function verifyChain(
  store: LedgerStore,
  instance: string,
  keys: ReadonlyMap<string, ReturnType<typeof publicKeyOf>>,
  since: number | undefined,
): Promise<ChainReport> {
  const checkpoints = await store.checkpoints(instance)
  const bySeq = new Map<number, Checkpoint>(checkpoints.map((c) => [c.seq, c]))
  const report: ChainReport = {
    instance,
    ok: true,
    entries: 0,
    firstSeq: null,
    lastSeq: null,
    checkpoints: checkpoints.length,
    signedThrough: checkpoints.at(-1)?.seq ?? 0,
    unsigned: 0,
  }
  const problems: Broken[] = []
  for (const c of checkpoints) {
    const key = keys.get(c.kid)
    if (key === undefined)
      problems.push({
        seq: c.seq,
        reason: `checkpoint at seq ${c.seq}: key ${c.kid} is unknown or not attested`,
      })
    else if (!checkpointSignatureValid(c, key))
      problems.push({ seq: c.seq, reason: `checkpoint at seq ${c.seq}: the signature does not verify` })
  }

  let previous: AuditEntry | undefined
  // The last checkpoint passed, to name where a recomputed stretch of the chain begins.
  let lastGood = 0
  let from = since ?? 1
  let stopped = false
  while (!stopped) {
    const page = await store.range(instance, from, pageSize)
    for (const entry of page) {
      const broken = checkEntry(entry, previous, bySeq, since)
      if (broken !== undefined) {
        problems.push(broken.rewritten ? { seq: lastGood + 1, reason: broken.reason } : broken)
        stopped = true
        break
      }
      if (bySeq.has(entry.seq)) lastGood = entry.seq
      report.entries += 1
      report.firstSeq ??= entry.seq
      report.lastSeq = entry.seq
      previous = entry
    }
    if (page.length < pageSize) break
    from = page.at(-1)!.seq + 1
    // A long chain is verified in the serving process: let requests through between pages.
    await new Promise((next) => setImmediate(next))
  }
  const last = report.lastSeq ?? (since === undefined ? 0 : since - 1)
  const beyond = checkpoints.find((c) => c.seq > last)
  if (!stopped && beyond !== undefined) {
    problems.push({
      seq: last + 1,
      reason: `entries after seq ${last} are missing: a signed checkpoint covers seq ${beyond.seq}`,
    })
  }
  report.unsigned = report.lastSeq === null ? 0 : Math.max(0, report.lastSeq - report.signedThrough)
  if (problems.length > 0) {
    report.ok = false
    report.broken = problems.reduce((a, b) => (b.seq < a.seq ? b : a))
  }
  return report
}

function checkEntry(
  entry: AuditEntry,
  previous: AuditEntry | undefined,
  checkpoints: ReadonlyMap<number, Checkpoint>,
  since: number | undefined,
): (Broken & { rewritten?: boolean }) | undefined {
  // Position first: a gap names the missing entry.
  if (previous !== undefined && entry.seq !== previous.seq + 1)
    return { seq: previous.seq + 1, reason: `entry ${previous.seq + 1} is missing` }
  if (previous === undefined && since !== undefined && entry.seq !== since)
    return { seq: since, reason: `entry ${since} is missing` }
  if (previous === undefined && since === undefined && entry.seq > 1 && !checkpoints.has(entry.seq - 1)) {
    return {
      seq: entry.seq - 1,
      reason: `the chain starts at seq ${entry.seq} with no signed checkpoint at seq ${entry.seq - 1}: earlier entries were removed`,
    }
  }
  // Then content: renumbered rows still hash as what they were, which names the insertion,
  // deletion or reorder rather than the shift it caused.
  if (entryHash(entry) !== entry.hash) {
    if (entryHash({ ...entry, seq: entry.seq - 1 }) === entry.hash)
      return {
        seq: entry.seq - 1,
        reason: `entry ${entry.seq} holds what was entry ${entry.seq - 1}: an entry was inserted at seq ${entry.seq - 1} or entries were reordered`,
      }
    if (entryHash({ ...entry, seq: entry.seq + 1 }) === entry.hash)
      return {
        seq: entry.seq,
        reason: `entry ${entry.seq} holds what was entry ${entry.seq + 1}: entry ${entry.seq} was deleted or entries were reordered`,
      }
    return { seq: entry.seq, reason: `entry ${entry.seq} does not match its hash: its content was changed` }
  }
  // Then the link to what comes before it.
  if (previous !== undefined) {
    if (entry.prevHash !== previous.hash)
      return {
        seq: entry.seq,
        reason: `entry ${entry.seq}'s prevHash does not match entry ${previous.seq}'s hash`,
      }
  } else if (since === undefined) {
    if (entry.seq === 1 && entry.prevHash !== genesisHash)
      return { seq: 1, reason: 'the first entry does not start from the genesis hash' }
    // Pruned by retention: what remains starts right after a signed checkpoint, from its hash.
    const anchor = checkpoints.get(entry.seq - 1)
    if (entry.seq > 1 && anchor !== undefined && anchor.hash !== entry.prevHash)
      return {
        seq: entry.seq,
        reason: `entry ${entry.seq} does not follow the signed checkpoint at seq ${anchor.seq}`,
      }
  }
  const signed = checkpoints.get(entry.seq)
  if (signed !== undefined && signed.hash !== entry.hash) {
    return {
      seq: entry.seq,
      rewritten: true,
      reason: `the chain disagrees with the signed checkpoint at seq ${entry.seq}: entries after the previous checkpoint were rewritten`,
    }
  }
  return undefined
}
