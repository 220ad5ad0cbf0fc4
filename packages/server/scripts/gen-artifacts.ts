// biome-ignore-all lint/suspicious/noTemplateCurlyInString: `${…}` in these strings is the literal interpolation syntax
/**
 * Generates the committed artifacts that must not drift from the code (STYLE habit 3):
 * docs/reference/config.md and packages/server/schema/config.schema.json from the config schema,
 * and docs/reference/errors.md from the error catalogue.
 *
 *   npx tsx packages/server/scripts/gen-artifacts.ts           write them
 *   npx tsx packages/server/scripts/gen-artifacts.ts --check   exit 1 naming any that are stale
 */
import { mkdir, readFile, writeFile } from 'node:fs/promises'
import { dirname, join } from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'
import { ConfigSchema, Duration } from '../src/config/schema.ts'
import { errorCatalogue } from '../src/errors/catalogue.ts'

const repoRoot = fileURLToPath(new URL('../../../', import.meta.url))

type Artifact = { path: string; content: string }

type JsonSchema = { readonly [key: string]: unknown }

// TypeBox schemas are plain JSON Schema at runtime.
const rootSchema = ConfigSchema as unknown as JsonSchema
const durationPattern = (Duration.anyOf[1] as unknown as JsonSchema)['pattern']

const banner = (source: string) =>
  `<!-- Generated from ${source} by packages/server/scripts/gen-artifacts.ts. Do not edit: run \`npm run gen\`. -->`

function renderArtifacts(): Artifact[] {
  return [
    { path: 'docs/reference/config.md', content: renderConfigReference() },
    { path: 'packages/server/schema/config.schema.json', content: renderJsonSchema() },
    { path: 'docs/reference/errors.md', content: renderErrorReference() },
  ]
}

/** The repo-relative paths of artifacts whose committed content differs from what would be written. */
export async function checkArtifacts(root: string = repoRoot): Promise<string[]> {
  const stale: string[] = []
  for (const artifact of renderArtifacts()) {
    const current = await readFile(join(root, artifact.path), 'utf8').catch(() => undefined)
    if (current !== artifact.content) stale.push(artifact.path)
  }
  return stale
}

async function writeArtifacts(root: string): Promise<string[]> {
  const written: string[] = []
  for (const artifact of renderArtifacts()) {
    const file = join(root, artifact.path)
    const current = await readFile(file, 'utf8').catch(() => undefined)
    if (current === artifact.content) continue
    await mkdir(dirname(file), { recursive: true })
    await writeFile(file, artifact.content)
    written.push(artifact.path)
  }
  return written
}

// ---------------------------------------------------------------------------------------------
// JSON Schema

function renderJsonSchema(): string {
  const document = {
    $schema: 'https://json-schema.org/draft/2020-12/schema',
    title: '4Runr Gateway configuration',
    ...rootSchema,
  }
  return `${JSON.stringify(document, null, 2)}\n`
}

// ---------------------------------------------------------------------------------------------
// Error reference

function renderErrorReference(): string {
  const rows = Object.entries(errorCatalogue).map(
    ([code, entry]) => `| \`${code}\` | ${entry.status} | ${cell(entry.message)} |`,
  )
  return [
    '# Error codes',
    '',
    banner('packages/server/src/errors/catalogue.ts'),
    '',
    'Every error has one JSON body (DESIGN §15):',
    '`{"error":{"code":"policy_denied","message":"…","status":403,"requestId":"…","details":{…}}}`.',
    'The code is stable and safe to branch on; the message below is the default, and a response may',
    'carry a more specific one.',
    '',
    '| code | status | default message |',
    '|---|---|---|',
    ...rows,
    '',
  ].join('\n')
}

// ---------------------------------------------------------------------------------------------
// Config reference

type Section = { title: string; description: string; rows: string[] }

function renderConfigReference(): string {
  const sections: Section[] = []
  objectSections(rootSchema, '', sections)
  const body = sections.flatMap((section) => [
    `## ${section.title}`,
    '',
    ...(section.description === '' ? [] : [cell(section.description), '']),
    '| key | type | required | default | description |',
    '|---|---|---|---|---|',
    ...section.rows,
    '',
  ])
  return [
    '# Configuration reference',
    '',
    banner('packages/server/src/config/schema.ts'),
    '',
    'The gateway reads one YAML file (DESIGN §17). Unknown keys and wrong types are refused with',
    'the path and the reason. Inside string values, `${env:NAME}`, `${env:NAME:-default}` and',
    '`${file:PATH}` interpolate (a relative path is read from the config file’s directory) and',
    '`$${` writes a literal `${`. A duration is an integer of milliseconds or a string with a unit:',
    '`500ms`, `4s`, `15m`, `1h`, `7d`. The JSON Schema is `packages/server/schema/config.schema.json`.',
    '',
    ...body,
  ].join('\n')
}

/** A table for an object with properties, then one for each object below it, depth first. */
function objectSections(schema: JsonSchema, path: string, out: Section[], qualifier = ''): void {
  const properties = asObject(schema['properties'])
  const required = Array.isArray(schema['required']) ? (schema['required'] as string[]) : []
  const title = `${path === '' ? 'Top level' : `\`${path}\``}${qualifier}`
  const rows = Object.entries(properties).map(([key, value]) => {
    const property = asObject(value)
    const description = typeof property['description'] === 'string' ? property['description'] : ''
    return `| \`${key}\` | ${cell(typeOf(property))} | ${required.includes(key) ? 'yes' : 'no'} | ${cell(defaultOf(description))} | ${cell(description)} |`
  })
  out.push({ title, description: path === '' ? '' : String(schema['description'] ?? ''), rows })
  for (const [key, value] of Object.entries(properties)) {
    descend(asObject(value), path === '' ? key : `${path}.${key}`, out)
  }
}

function descend(schema: JsonSchema, path: string, out: Section[]): void {
  if (schema['type'] === 'object' && schema['properties'] !== undefined) {
    objectSections(schema, path, out)
  } else if (Array.isArray(schema['anyOf'])) {
    const branches = schema['anyOf'] as JsonSchema[]
    const discriminator = discriminatorOf(branches)
    for (const branch of branches) {
      if (discriminator !== undefined) {
        const tag = constOf(branch, discriminator)
        objectSections(branch, path, out, ` (${discriminator}: ${String(tag)})`)
      } else {
        descend(branch, path, out)
      }
    }
  } else if (schema['type'] === 'array' && schema['items'] !== undefined) {
    descend(asObject(schema['items']), `${path}[]`, out)
  } else if (schema['patternProperties'] !== undefined) {
    for (const value of Object.values(asObject(schema['patternProperties']))) {
      descend(asObject(value), `${path}.<name>`, out)
    }
  }
}

function typeOf(schema: JsonSchema): string {
  if (Array.isArray(schema['anyOf'])) {
    const branches = schema['anyOf'] as JsonSchema[]
    if (branches.some((branch) => branch['pattern'] === durationPattern)) return 'duration'
    if (branches.every((branch) => 'const' in branch)) {
      return `one of ${branches.map((branch) => code(String(branch['const']))).join(', ')}`
    }
    const discriminator = discriminatorOf(branches)
    if (discriminator !== undefined) {
      const tags = branches.map((branch) => code(String(constOf(branch, discriminator))))
      return `object, by \`${discriminator}\`: ${tags.join(', ')}`
    }
    return branches.map(typeOf).join(' or ')
  }
  if ('const' in schema) return code(String(schema['const']))
  switch (schema['type']) {
    case 'string': {
      const limits: string[] = []
      if (typeof schema['pattern'] === 'string') limits.push(`matching ${code(schema['pattern'])}`)
      const minLength = schema['minLength']
      if (minLength === 1) return ['non-empty string', ...limits].join(' ')
      if (typeof minLength === 'number') limits.push(`of at least ${minLength} characters`)
      return ['string', ...limits].join(' ')
    }
    case 'integer':
    case 'number': {
      const min = schema['minimum']
      const max = schema['maximum']
      if (typeof min === 'number' && typeof max === 'number') return `${schema['type']} ${min}–${max}`
      if (typeof min === 'number') return `${schema['type']} ≥ ${min}`
      if (typeof max === 'number') return `${schema['type']} ≤ ${max}`
      return String(schema['type'])
    }
    case 'array':
      return `array of ${typeOf(asObject(schema['items']))}`
    case 'object': {
      const patterns = Object.values(asObject(schema['patternProperties']))
      if (schema['properties'] === undefined && patterns.length > 0) {
        return `map of name to ${patterns.map((value) => typeOf(asObject(value))).join(' or ')}`
      }
      return 'object'
    }
    default:
      return typeof schema['type'] === 'string' ? schema['type'] : 'any'
  }
}

/** The default a description states, as in `(default 30000)` or `(default: one \`*\` rule)`. */
function defaultOf(description: string): string {
  return /\(default:? ([^)]*)\)/.exec(description)?.[1] ?? ''
}

function discriminatorOf(branches: JsonSchema[]): string | undefined {
  const first = branches[0]
  if (first === undefined) return undefined
  return Object.keys(asObject(first['properties'])).find((key) =>
    branches.every((branch) => constOf(branch, key) !== undefined),
  )
}

function constOf(branch: JsonSchema, key: string): unknown {
  return asObject(asObject(branch['properties'])[key])['const']
}

function asObject(value: unknown): JsonSchema {
  return value !== null && typeof value === 'object' && !Array.isArray(value) ? (value as JsonSchema) : {}
}

/** A Markdown code span that survives backticks in the text. */
function code(text: string): string {
  const fence = text.includes('`') ? '``' : '`'
  const pad = text.startsWith('`') || text.endsWith('`') ? ' ' : ''
  return `${fence}${pad}${text}${pad}${fence}`
}

/** Text safe inside a table cell: one line, pipes escaped (GFM honours `\|` even in code spans). */
function cell(text: string): string {
  return text.replace(/\s*\n\s*/g, ' ').replace(/\|/g, '\\|')
}

async function main(argv: string[]): Promise<number> {
  if (argv.includes('--check')) {
    const stale = await checkArtifacts()
    if (stale.length === 0) return 0
    console.error(
      `stale generated files (run \`npm run gen\`):\n${stale.map((path) => `  ${path}`).join('\n')}`,
    )
    return 1
  }
  const written = await writeArtifacts(repoRoot)
  console.log(written.length === 0 ? 'generated files are up to date' : `wrote ${written.join(', ')}`)
  return 0
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  process.exitCode = await main(process.argv.slice(2))
}
