/**
 * Conformance: the config schema documents itself, and the generated artifacts (config
 * reference, JSON Schema, error reference) match the code they come from (STYLE habits 3 and 7).
 */
import assert from 'node:assert/strict'
import { readFile } from 'node:fs/promises'
import { describe, it } from 'node:test'
import { checkArtifacts } from '../../scripts/gen-artifacts.ts'
import { errorCatalogue } from '../errors/catalogue.ts'
import { ConfigSchema } from './schema.ts'

type JsonSchema = { readonly [key: string]: unknown }

/** Every property (by `a.b[].c` path) whose schema has no non-empty description. */
function undescribedProperties(schema: JsonSchema, path: string, out: string[]): string[] {
  const properties = schema['properties'] as Record<string, JsonSchema> | undefined
  for (const [key, property] of Object.entries(properties ?? {})) {
    const at = path === '' ? key : `${path}.${key}`
    const description = property['description']
    if (typeof description !== 'string' || description.trim() === '') out.push(at)
    undescribedProperties(property, at, out)
  }
  for (const value of Object.values((schema['patternProperties'] as Record<string, JsonSchema>) ?? {})) {
    undescribedProperties(value, `${path}.<name>`, out)
  }
  if (typeof schema['items'] === 'object' && schema['items'] !== null) {
    undescribedProperties(schema['items'] as JsonSchema, `${path}[]`, out)
  }
  for (const branch of (schema['anyOf'] as JsonSchema[] | undefined) ?? []) {
    undescribedProperties(branch, path, out)
  }
  return out
}

describe('generated artifacts', () => {
  it('describes every property of the config schema', () => {
    const missing = [...new Set(undescribedProperties(ConfigSchema as unknown as JsonSchema, '', []))]
    assert.deepEqual(missing, [], `properties without a description:\n  ${missing.join('\n  ')}`)
  })

  it('keeps the generated files up to date (run `npm run gen`)', async () => {
    assert.deepEqual(await checkArtifacts(), [])
  })

  it('documents every error code with its status in docs/reference/errors.md', async () => {
    const reference = await readFile(new URL('../../../../docs/reference/errors.md', import.meta.url), 'utf8')
    for (const [code, entry] of Object.entries(errorCatalogue)) {
      assert.ok(reference.includes(`| \`${code}\` | ${entry.status} |`), `${code} is not documented`)
    }
  })
})
