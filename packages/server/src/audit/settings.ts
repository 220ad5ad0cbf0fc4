/** The audit section of the config in its runtime form (DESIGN §17): defaults applied once. */
import { hostname } from 'node:os'
import type { RawConfig } from '../config/schema.ts'

export interface AuditSettings {
  readonly enabled: boolean
  readonly checkpointEvery: number
  readonly durability: 'batched' | 'sync'
  readonly onFailure: 'refuse' | 'continue'
  /** Days to keep, or undefined to keep everything. */
  readonly retainDays: number | undefined
  readonly instance: string
}

/** A host name made into a chain name: the characters `audit.instance` allows, at most 64. */
function defaultInstance(): string {
  return (
    hostname()
      .replace(/[^A-Za-z0-9._:-]/g, '-')
      .slice(0, 64) || 'gateway'
  )
}

/** The settings `raw.audit` asks for. */
export function auditSettings(raw: RawConfig): AuditSettings {
  const audit = raw.audit ?? {}
  return Object.freeze({
    enabled: audit.enabled ?? true,
    checkpointEvery: audit.checkpointEvery ?? 1000,
    durability: audit.durability ?? 'batched',
    onFailure: audit.onFailure ?? 'refuse',
    retainDays: audit.retainDays,
    instance: audit.instance ?? defaultInstance(),
  })
}
