import assert from 'node:assert/strict'
import { createHash } from 'node:crypto'
import { describe, it } from 'node:test'
import { canonicalJson } from '../policy/guards/args-shape.ts'
import { chain, entryCanonicalJson, entryHash, genesisHash } from './entry.ts'

describe('audit entry hashing', () => {
  const entry = {
    seq: 7,
    time: 1_700_000_000_123,
    instance: 'gw-1',
    requestId: 'req "quoted" \\ \u2028 é',
    correlationId: null,
    principal: 'agent:agt_1',
    kind: 'call' as const,
    target: 'tool:serpapi',
    action: 'search',
    decision: null,
    rule: null,
    status: 403,
    durationMs: 12.345,
    prevHash: genesisHash,
  }

  it('writes exactly the canonical JSON of the entry, so any canonical JSON implementation can verify', () => {
    assert.equal(entryCanonicalJson(entry), canonicalJson(entry))
    assert.equal(
      entryCanonicalJson({ ...entry, durationMs: Number.NaN }),
      canonicalJson({ ...entry, durationMs: Number.NaN }),
    )
  })

  it('hashes SHA-256 of the previous hash followed by the canonical JSON', () => {
    const expected = createHash('sha256')
      .update(genesisHash + canonicalJson(entry))
      .digest('hex')
    assert.equal(entryHash(entry), expected)
  })

  it('links each chained entry to the hash of the one before', () => {
    const [a, b] = chain('gw-1', { seq: 4, hash: genesisHash }, [entry, entry])
    assert.equal(a!.seq, 5)
    assert.equal(a!.prevHash, genesisHash)
    assert.equal(b!.prevHash, a!.hash)
    assert.notEqual(a!.hash, b!.hash)
  })
})
