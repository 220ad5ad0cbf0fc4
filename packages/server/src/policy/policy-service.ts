/**
 * The running policy set: the config file's policies (read-only through the API) followed by the
 * admin API's (versioned in the store). The set is rebuilt only when either side changes: a config
 * reload, a put or delete here, a put or delete on another instance (heard on the shared
 * `policies` channel, and caught by polling the store's fingerprint in case a message was lost).
 */
import { createHash } from 'node:crypto'
import type { CompiledConfig } from '../config/compile.ts'
import { schemaProblems } from '../config/load.ts'
import { PolicySchema, type RawPolicy } from '../config/schema.ts'
import { GatewayError } from '../errors/gateway-error.ts'
import type { SharedState, Unsubscribe } from '../state/types.ts'
import { type Store, StoreConflictError, type StoredPolicy } from '../store/types.ts'
import { type CompiledPolicy, compilePolicy } from './compile.ts'
import { PolicySet } from './policy-set.ts'

export const policyChannel = 'policies'
const pruneEveryMs = 10 * 60_000

export interface PolicyView {
  name: string
  source: 'config' | 'api'
  version: string | number
  updatedAt: string | null
  document: RawPolicy
}

export class PolicyService {
  private apiPolicies = new Map<string, { stored: StoredPolicy; compiled: CompiledPolicy }>()
  private set: PolicySet | undefined
  private builtFrom: readonly CompiledPolicy[] | undefined
  private apiGeneration = 0
  private builtGeneration = -1
  private fingerprint = ''
  private unsubscribe: Unsubscribe | undefined
  private timer: NodeJS.Timeout | undefined
  private pruneTimer: NodeJS.Timeout | undefined
  private reloading: Promise<void> | undefined

  constructor(
    private readonly store: Store,
    private readonly state: SharedState,
    private readonly currentConfig: () => CompiledConfig,
    private readonly onError: (err: unknown) => void,
    private readonly onInvalid: (
      name: string,
      problems: { path: string; message: string }[],
    ) => void = () => {},
  ) {}

  async start(resyncMs: number): Promise<void> {
    this.unsubscribe = this.state.subscribe(policyChannel, () => {
      this.reload().catch(this.onError)
    })
    await this.reload()
    this.timer = setInterval(() => {
      this.store.policies
        .fingerprint()
        .then((fingerprint) => (fingerprint === this.fingerprint ? undefined : this.reload()))
        .catch(this.onError)
    }, resyncMs)
    this.timer.unref()
    // Ended quota windows and approvals a day past their expiry can no longer matter.
    this.pruneTimer = setInterval(() => {
      const now = Date.now()
      Promise.all([this.store.quotas.prune(now), this.store.approvals.prune(now - 86_400_000)]).catch(
        this.onError,
      )
    }, pruneEveryMs)
    this.pruneTimer.unref()
  }

  stop(): void {
    this.unsubscribe?.()
    if (this.timer !== undefined) clearInterval(this.timer)
    if (this.pruneTimer !== undefined) clearInterval(this.pruneTimer)
  }

  /** The set new decisions use: rebuilt here, at most once per change, never per request. */
  current(): PolicySet {
    const configPolicies = this.currentConfig().policies
    if (
      this.set === undefined ||
      this.builtFrom !== configPolicies ||
      this.builtGeneration !== this.apiGeneration
    ) {
      const api = [...this.apiPolicies.values()]
        .filter(({ compiled }) => !configPolicies.some((p) => p.name === compiled.name))
        .map(({ compiled }) => compiled)
      const all = [...configPolicies, ...api]
      const version = createHash('sha256')
        .update(all.map((p) => `${p.source}:${p.name}:${p.version}`).join('\n'))
        .digest('hex')
        .slice(0, 12)
      this.set = new PolicySet(all, version)
      this.builtFrom = configPolicies
      this.builtGeneration = this.apiGeneration
    }
    return this.set
  }

  /** Re-read the API policies from the store; concurrent calls share one read. */
  reload(): Promise<void> {
    this.reloading ??= this.readStore().finally(() => {
      this.reloading = undefined
    })
    return this.reloading
  }

  private async readStore(): Promise<void> {
    const fingerprint = await this.store.policies.fingerprint()
    const stored = await this.store.policies.list()
    const next = new Map<string, { stored: StoredPolicy; compiled: CompiledPolicy }>()
    for (const policy of stored) {
      const known = this.apiPolicies.get(policy.name)
      if (known !== undefined && known.stored.version === policy.version) {
        next.set(policy.name, known)
        continue
      }
      const compiled = compileStored(policy)
      // A stored policy that no longer compiles (written by a newer gateway, say) is left out and
      // reported: leaving it out can only deny more, never allow more.
      if (compiled.ok) next.set(policy.name, { stored: policy, compiled: compiled.policy })
      else this.onInvalid(policy.name, compiled.problems)
    }
    this.apiPolicies = next
    this.fingerprint = fingerprint
    this.apiGeneration++
  }

  list(): PolicyView[] {
    return this.current().policies.map((policy) => this.view(policy))
  }

  get(name: string): PolicyView {
    const policy = this.current().policies.find((p) => p.name === name)
    if (policy === undefined) throw new GatewayError('not_found', `No policy is named "${name}".`)
    return this.view(policy)
  }

  async history(name: string, limit = 20): Promise<PolicyView[]> {
    const versions = await this.store.policies.history(name, { limit })
    if (versions.length === 0) throw new GatewayError('not_found', `No policy is named "${name}".`)
    return versions.map((stored) => ({
      name: stored.name,
      source: 'api' as const,
      version: stored.version,
      updatedAt: new Date(stored.updatedAt).toISOString(),
      document: stored.document as RawPolicy,
    }))
  }

  /**
   * Validate, compile and store a new version of an API policy. Refuses (400) with every problem
   * and its path; the running set stays as it was.
   */
  async put(name: string, body: unknown, expectedVersion?: number): Promise<PolicyView> {
    if (this.currentConfig().policies.some((p) => p.name === name)) {
      throw new GatewayError(
        'conflict',
        `Policy "${name}" comes from the config file and is read-only here.`,
        {
          details: { reason: 'config_policy' },
        },
      )
    }
    const document =
      typeof body === 'object' && body !== null && !Array.isArray(body) && !('name' in body)
        ? { name, ...body }
        : body
    const shapeProblems = schemaProblems(PolicySchema, document)
    if (shapeProblems.length > 0) throw invalid(shapeProblems)
    const policy = document as RawPolicy
    if (policy.name !== name)
      throw invalid([{ path: 'name', message: `must be "${name}", the name in the path` }])
    const compiled = compilePolicy(policy, 'api', 0)
    if (!compiled.ok)
      throw invalid(compiled.problems.map((p) => ({ path: p.path || '(root)', message: p.message })))
    let stored: StoredPolicy
    try {
      stored = await this.store.policies.put(name, policy, { expectedVersion })
    } catch (err) {
      if (err instanceof StoreConflictError) {
        throw new GatewayError('conflict', `Policy "${name}" is not at version ${expectedVersion}.`, {
          details: { reason: 'version_mismatch' },
        })
      }
      throw err
    }
    this.apply(stored, { ...compiled.policy, version: stored.version })
    return this.view(this.apiPolicies.get(name)!.compiled)
  }

  async delete(name: string): Promise<void> {
    if (this.currentConfig().policies.some((p) => p.name === name)) {
      throw new GatewayError(
        'conflict',
        `Policy "${name}" comes from the config file and is read-only here.`,
        {
          details: { reason: 'config_policy' },
        },
      )
    }
    const deleted = await this.store.policies.delete(name)
    if (!deleted) throw new GatewayError('not_found', `No policy is named "${name}".`)
    this.apiPolicies.delete(name)
    this.apiGeneration++
    this.announce()
  }

  private apply(stored: StoredPolicy, compiled: CompiledPolicy): void {
    const known = this.apiPolicies.get(stored.name)
    // A concurrent reload may already hold a newer version.
    if (known === undefined || known.stored.version < stored.version) {
      this.apiPolicies.set(stored.name, { stored, compiled })
      this.apiGeneration++
    }
    this.announce()
  }

  private announce(): void {
    // Best effort: the other instances also poll the store's fingerprint.
    this.state.publish(policyChannel, 'changed').catch(this.onError)
  }

  private view(policy: CompiledPolicy): PolicyView {
    const stored = policy.source === 'api' ? this.apiPolicies.get(policy.name)?.stored : undefined
    return {
      name: policy.name,
      source: policy.source,
      version: policy.version,
      updatedAt: stored === undefined ? null : new Date(stored.updatedAt).toISOString(),
      document: policy.document,
    }
  }
}

function compileStored(stored: StoredPolicy) {
  const problems = schemaProblems(PolicySchema, stored.document)
  if (problems.length > 0) return { ok: false as const, problems }
  return compilePolicy(stored.document as RawPolicy, 'api', stored.version)
}

function invalid(problems: { path: string; message: string }[]): GatewayError {
  const first = problems[0]!
  return new GatewayError('bad_request', `Invalid policy: ${first.path}: ${first.message}`, {
    details: { problems },
  })
}
