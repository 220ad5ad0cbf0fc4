/**
 * One undici keep-alive pool per HTTP system. Reload keeps a pool whose settings did not change
 * and closes the others gracefully: `close()` lets their in-flight requests finish first.
 */
import { Pool } from 'undici'
import type { CompiledConfig, CompiledHttpSystem } from '../config/compile.ts'

export interface Pools {
  /** The pool for `system`, created on first use. */
  get(system: CompiledHttpSystem): Pool
  /** Keep the pools `config` uses and close the rest. */
  retain(config: CompiledConfig): Promise<void>
  close(): Promise<void>
}

/** Create the pool registry. */
export function createPools(): Pools {
  const pools = new Map<string, Pool>()
  const create = (system: CompiledHttpSystem): Pool =>
    new Pool(system.origin, {
      connections: system.connections,
      keepAliveTimeout: system.keepAliveMs,
      connectTimeout: system.connectTimeoutMs,
      headersTimeout: system.timeoutMs,
      bodyTimeout: system.timeoutMs,
      pipelining: 1,
    })
  return {
    get(system) {
      let pool = pools.get(system.poolKey)
      if (pool === undefined) {
        pool = create(system)
        pools.set(system.poolKey, pool)
      }
      return pool
    },
    async retain(config) {
      const used = new Set<string>()
      for (const system of config.systems.values()) if (system.kind !== 'nats') used.add(system.poolKey)
      const closing: Promise<void>[] = []
      for (const [key, pool] of pools) {
        if (used.has(key)) continue
        pools.delete(key)
        closing.push(pool.close())
      }
      await Promise.all(closing)
    },
    async close() {
      const all = [...pools.values()]
      pools.clear()
      await Promise.all(all.map((p) => p.close()))
    },
  }
}
