// biome-ignore-all lint/suspicious/noTemplateCurlyInString: `${…}` in these strings is the literal interpolation syntax
/**
 * Loading the config file (DESIGN §17): YAML parsed with positions kept, `${env:…}` and
 * `${file:…}` interpolated inside string scalars, then validated against the schema with every
 * problem reported by path, line and reason.
 */
import { readFileSync } from 'node:fs'
import { readFile } from 'node:fs/promises'
import { dirname, resolve } from 'node:path'
import type { TSchema } from 'typebox'
import { Compile } from 'typebox/compile'
import { Settings } from 'typebox/system'
import { Value } from 'typebox/value'
import {
  type Document,
  isAlias,
  isMap,
  isNode,
  isScalar,
  isSeq,
  LineCounter,
  type Node,
  parseDocument,
  type ScalarTag,
} from 'yaml'
import { ConfigSchema, Duration, type RawConfig } from './schema.ts'

/** One reason the config was refused, at a path like `channels[2].rules[0].path`. */
export type ConfigProblem = { path: string; line?: number; column?: number; message: string }

/** The config was refused; `message` lists every problem as `FILE:LINE:COL path: reason`. */
export class ConfigError extends Error {
  readonly problems: ConfigProblem[]
  readonly file: string

  constructor(problems: ConfigProblem[], file = '(config)') {
    super(problems.map((problem) => formatProblem(file, problem)).join('\n'))
    this.name = 'ConfigError'
    this.problems = problems
    this.file = file
  }
}

/** Options for {@link parseConfigText}; `env` and `readFile` are the side effects interpolation uses. */
export type ParseConfigOptions = {
  /** The file the text came from: names it in messages and anchors relative `${file:…}` paths. */
  file?: string
  env?: NodeJS.ProcessEnv
  readFile?: (path: string) => string
}

/** A path inside the config: object keys and array indexes. */
type Segment = string | number

/** A problem before it has a line: `atKey` points it at the key rather than the value. */
type Finding = { segments: Segment[]; message: string; atKey?: boolean }

type JsonSchema = { readonly [key: string]: unknown }

// Config files are written by operators, not clients, so the DoS guard of TypeBox's default (8
// errors) only hides problems: a file with two bad systems would report one of them.
const maxErrors = 1000

const validator = Compile(ConfigSchema)

// TypeBox schemas are plain JSON Schema at runtime; the error walk reads them as such.
const rootSchema = ConfigSchema as unknown as JsonSchema
const durationPattern = (Duration.anyOf[1] as unknown as JsonSchema)['pattern']

// Keyed by the returned config object so the paths travel with it without a wrapper type.
const interpolatedByConfig = new WeakMap<object, ReadonlySet<string>>()

/** The paths (as in problems) whose values came from `${env:…}` or `${file:…}`: redact them. */
export function interpolatedPaths(config: RawConfig): ReadonlySet<string> {
  return interpolatedByConfig.get(config) ?? new Set()
}

/** Parse, interpolate and validate config text; throws {@link ConfigError} listing every problem. */
export function parseConfigText(text: string, opts: ParseConfigOptions = {}): RawConfig {
  const file = opts.file ?? '(config)'
  const lineCounter = new LineCounter()
  const doc = parseDocument(text, { lineCounter, prettyErrors: false, version: '1.2' })
  const position = (offset: number) => {
    const { line, col } = lineCounter.linePos(offset)
    return { line, column: col }
  }

  if (doc.errors.length > 0) {
    throw new ConfigError(
      doc.errors.map((error) => ({
        path: '(yaml)',
        ...position(error.pos[0]),
        message: oneLine(error.message),
      })),
      file,
    )
  }

  const interpolation = interpolateDocument(doc, {
    env: opts.env ?? process.env,
    readFile: opts.readFile ?? ((path) => readFileSync(path, 'utf8')),
    baseDir: opts.file === undefined ? process.cwd() : dirname(resolve(opts.file)),
  })

  let value: unknown
  try {
    value = doc.toJS() ?? {}
  } catch (error) {
    // toJS refuses alias bombs (maxAliasCount) and similar structural abuse.
    throw new ConfigError([{ path: '(yaml)', message: oneLine(errorMessage(error)) }], file)
  }

  const findings = [...interpolation.findings]
  if (!validator.Check(value)) {
    // A value that failed to interpolate is still the literal `${…}` text; its type error would
    // only repeat the real problem.
    const failed = new Set(interpolation.findings.map((finding) => formatPath(finding.segments)))
    const schemaFindings: Finding[] = []
    explain(rootSchema, value, [], schemaFindings)
    // The explanation is a reading of TypeBox's errors; never let a gap in it accept a bad file.
    if (schemaFindings.length === 0)
      schemaFindings.push({ segments: [], message: 'does not match the schema' })
    findings.push(...schemaFindings.filter((finding) => !failed.has(formatPath(finding.segments))))
  }
  if (findings.length > 0) throw new ConfigError(toProblems(findings, doc, position), file)

  const config = value as RawConfig
  interpolatedByConfig.set(config, interpolation.paths)
  return config
}

/** Read a config file's text; an unreadable file is a {@link ConfigError} at `(file)`. */
export async function readConfigText(file: string): Promise<string> {
  try {
    return await readFile(file, 'utf8')
  } catch (error) {
    throw new ConfigError([{ path: '(file)', message: `cannot read the file: ${fsReason(error)}` }], file)
  }
}

/** Read and parse a config file; an unreadable file is a {@link ConfigError} at `(file)`. */
export async function loadConfigFile(
  file: string,
  opts: { env?: NodeJS.ProcessEnv } = {},
): Promise<{ config: RawConfig; text: string }> {
  const text = await readConfigText(file)
  const config = parseConfigText(text, opts.env === undefined ? { file } : { file, env: opts.env })
  return { config, text }
}

function formatProblem(file: string, problem: ConfigProblem): string {
  const where = problem.line === undefined ? file : `${file}:${problem.line}:${problem.column ?? 1}`
  return `${where} ${problem.path}: ${problem.message}`
}

/**
 * Every reason `value` fails `schema`, with paths as in config errors (`allow[0].tool`), for
 * request bodies that share a config schema (a policy put through the admin API).
 */
export function schemaProblems(schema: TSchema, value: unknown): { path: string; message: string }[] {
  if (validatorFor(schema).Check(value)) return []
  const out: Finding[] = []
  explain(schema as unknown as JsonSchema, value, [], out)
  return out.map((finding) => ({ path: formatPath(finding.segments), message: finding.message }))
}

const validators = new WeakMap<TSchema, ReturnType<typeof Compile>>()
function validatorFor(schema: TSchema): ReturnType<typeof Compile> {
  let compiled = validators.get(schema)
  if (compiled === undefined) {
    compiled = Compile(schema)
    validators.set(schema, compiled)
  }
  return compiled
}

/**
 * `channels[2].rules[0].path`: dots for keys, brackets for indexes, `(root)` for the document.
 * Keys are not quoted even when they hold a dot, so redaction can rebuild the same paths simply.
 */
function formatPath(segments: readonly Segment[]): string {
  if (segments.length === 0) return '(root)'
  let out = ''
  for (const segment of segments) {
    if (typeof segment === 'number') out += `[${segment}]`
    else out += out === '' ? segment : `.${segment}`
  }
  return out
}

// ---------------------------------------------------------------------------------------------
// Interpolation

type InterpolationContext = {
  env: NodeJS.ProcessEnv
  readFile: (path: string) => string
  baseDir: string
}

type InterpolationResult = { findings: Finding[]; paths: Set<string> }

/**
 * Interpolate string scalars in place on the parsed document. Working on nodes, not text, is
 * what keeps a value from injecting YAML structure: whatever an env var holds stays one scalar.
 */
function interpolateDocument(doc: Document, ctx: InterpolationContext): InterpolationResult {
  const result: InterpolationResult = { findings: [], paths: new Set() }
  // Whether each scalar was interpolated, so an alias to it is recorded (for redaction) without
  // being interpolated twice.
  const done = new Map<Node, boolean>()
  const active = new Set<Node>()

  const walk = (node: unknown, segments: Segment[]): void => {
    if (isAlias(node)) {
      walk(node.resolve(doc), segments)
      return
    }
    if (!isNode(node) || active.has(node)) return
    if (isMap(node)) {
      active.add(node)
      for (const pair of node.items) walk(pair.value, [...segments, keySegment(pair.key)])
      active.delete(node)
      return
    }
    if (isSeq(node)) {
      active.add(node)
      for (const [index, item] of node.items.entries()) walk(item, [...segments, index])
      active.delete(node)
      return
    }
    if (!isScalar(node) || typeof node.value !== 'string') return
    const seen = done.get(node)
    if (seen !== undefined) {
      if (seen) result.paths.add(formatPath(segments))
      return
    }
    const outcome = interpolateString(node.value, ctx)
    done.set(node, outcome.interpolated)
    if ('problem' in outcome) {
      result.findings.push({ segments, message: outcome.problem })
      return
    }
    if (outcome.interpolated) result.paths.add(formatPath(segments))
    // An explicit tag (`!!str "${env:PORT}"`) says what the value is; otherwise a lone expression
    // is read again as a plain YAML scalar so `port: "${env:PORT}"` gives a number.
    node.value = outcome.whole && node.tag === undefined ? readPlainScalar(doc, outcome.value) : outcome.value
  }

  walk(doc.contents, [])
  return result
}

function keySegment(key: unknown): string {
  if (isScalar(key)) return String(key.value)
  return String(key)
}

type Interpolated =
  | { value: string; interpolated: boolean; whole: boolean }
  | { problem: string; interpolated: boolean }

const envName = /^[A-Za-z_][A-Za-z0-9_]*$/

/** Expand `${env:NAME}`, `${env:NAME:-default}` and `${file:PATH}`; `$${` is a literal `${`. */
function interpolateString(text: string, ctx: InterpolationContext): Interpolated {
  if (!text.includes('${')) return { value: text, interpolated: false, whole: false }
  let out = ''
  let expressions = 0
  let whole = false
  let index = 0
  while (index < text.length) {
    if (text.startsWith('$${', index)) {
      out += '${'
      index += 3
      continue
    }
    if (!text.startsWith('${', index)) {
      out += text[index]
      index += 1
      continue
    }
    const end = text.indexOf('}', index + 2)
    if (end < 0) return { problem: 'unterminated "${" (write "$${" for a literal "${")', interpolated: false }
    const expanded = expand(text.slice(index + 2, end), ctx)
    if ('problem' in expanded) return { problem: expanded.problem, interpolated: false }
    whole = index === 0 && end === text.length - 1
    out += expanded.value
    expressions += 1
    index = end + 1
  }
  return { value: out, interpolated: expressions > 0, whole }
}

function expand(expression: string, ctx: InterpolationContext): { value: string } | { problem: string } {
  if (expression.startsWith('env:')) {
    const body = expression.slice(4)
    const split = body.indexOf(':-')
    const name = split < 0 ? body : body.slice(0, split)
    if (!envName.test(name)) return { problem: `invalid environment variable name in "\${${expression}}"` }
    const value = ctx.env[name]
    // Shell semantics: `:-` also replaces an empty value.
    if (split >= 0 && (value === undefined || value === '')) return { value: body.slice(split + 2) }
    if (value === undefined) return { problem: `environment variable ${name} is not set` }
    return { value }
  }
  if (expression.startsWith('file:')) {
    const path = expression.slice(5)
    if (path === '') return { problem: '"${file:}" needs a path' }
    try {
      return { value: ctx.readFile(resolve(ctx.baseDir, path)).replace(/\r?\n$/, '') }
    } catch (error) {
      return { problem: `cannot read file "${path}": ${fsReason(error)}` }
    }
  }
  return {
    problem: `unknown interpolation "\${${expression}}": expected \${env:NAME}, \${env:NAME:-default} or \${file:PATH} (write "$\${" for a literal "\${")`,
  }
}

/** Resolve a string as an untagged plain scalar would be (number, boolean, null), never as structure. */
function readPlainScalar(doc: Document, text: string): unknown {
  // An empty value stays an empty string: the core schema would read it as null.
  if (text === '') return text
  for (const tag of doc.schema.tags) {
    if (tag.collection === undefined && tag.default === true && tag.test?.test(text) === true) {
      let failed = false
      const value = (tag as ScalarTag).resolve(
        text,
        () => {
          failed = true
        },
        {},
      )
      // Some core tags (bool) resolve to a Scalar node rather than a bare value.
      if (!failed) return isScalar(value) ? value.value : value
    }
  }
  return text
}

// ---------------------------------------------------------------------------------------------
// Validation errors → findings

/**
 * Explain why `value` fails `schema`. TypeBox reports every branch of a union; those errors are
 * grouped by union and replaced with one explanation of the branch the value was meant to be.
 */
function explain(schema: JsonSchema, value: unknown, base: Segment[], out: Finding[]): void {
  if (Array.isArray(schema['anyOf'])) {
    explainUnion(schema, value, base, out)
    return
  }
  const unions = new Map<string, { schema: JsonSchema; segments: Segment[] }>()
  for (const error of collectErrors(schema, value)) {
    const schemaSegments = decodePointer(error.schemaPath)
    const instanceSegments = toSegments(decodePointer(error.instancePath), value)
    const union = unionInPath(schemaSegments)
    if (union !== undefined) {
      const segments = instanceSegments.slice(0, union.depth)
      unions.set(formatPath(segments), {
        schema: resolvePointer(schema, schemaSegments.slice(0, union.schemaLength)),
        segments,
      })
      continue
    }
    if (error.keyword === 'anyOf') {
      unions.set(formatPath(instanceSegments), {
        schema: resolvePointer(schema, schemaSegments),
        segments: instanceSegments,
      })
      continue
    }
    out.push(...describeError(error, [...base, ...instanceSegments]))
  }
  for (const union of unions.values()) {
    explainUnion(union.schema, valueAt(value, union.segments), [...base, ...union.segments], out)
  }
}

function explainUnion(schema: JsonSchema, value: unknown, at: Segment[], out: Finding[]): void {
  const branches = (schema['anyOf'] as JsonSchema[]) ?? []
  if (branches.some((branch) => branch['pattern'] === durationPattern)) {
    out.push({ segments: at, message: 'expected a duration such as 500ms, 4s, 15m, 1h, 7d' })
    return
  }
  if (branches.every((branch) => 'const' in branch)) {
    out.push({
      segments: at,
      message: `expected one of: ${branches.map((b) => String(b['const'])).join(', ')}`,
    })
    return
  }
  const discriminator = discriminatorOf(branches)
  if (discriminator !== undefined && isPlainObject(value)) {
    const tag = value[discriminator]
    const match = branches.find((branch) => constOf(branch, discriminator) === tag)
    if (match !== undefined) {
      explain(match, value, at, out)
      return
    }
    const allowed = branches.map((branch) => String(constOf(branch, discriminator))).join(', ')
    if (tag === undefined) {
      out.push({ segments: at, message: `missing required key "${discriminator}" (one of: ${allowed})` })
    } else {
      out.push({ segments: [...at, discriminator], message: `expected one of: ${allowed}` })
    }
    return
  }
  const candidates = branches.filter((branch) => typeMatches(branch, value))
  if (candidates.length === 0) {
    const expected = [...new Set(branches.map(describeType))].join(' or ')
    out.push({ segments: at, message: `expected ${expected}` })
    return
  }
  // Several branches of the value's type: explain the one it came closest to.
  let best: Finding[] | undefined
  for (const candidate of candidates) {
    const findings: Finding[] = []
    explain(candidate, value, at, findings)
    if (best === undefined || findings.length < best.length) best = findings
  }
  out.push(...(best ?? []))
}

type TypeBoxError = {
  keyword: string
  schemaPath: string
  instancePath: string
  params: object
  message: string
}

function collectErrors(schema: JsonSchema, value: unknown): TypeBoxError[] {
  const previous = Settings.Get().maxErrors
  Settings.Set({ maxErrors })
  try {
    return Value.Errors(schema as TSchema, value)
  } finally {
    Settings.Set({ maxErrors: previous })
  }
}

function describeError(error: TypeBoxError, at: Segment[]): Finding[] {
  const params = error.params as Record<string, unknown>
  switch (error.keyword) {
    case 'additionalProperties':
      return (params['additionalProperties'] as string[]).map((key) => ({
        segments: [...at, key],
        message: `unknown key ${JSON.stringify(key)}`,
        atKey: true,
      }))
    case 'boolean':
      // `additionalProperties: false` reports each extra key twice; the keyword above is enough.
      return []
    case 'required':
      return (params['requiredProperties'] as string[]).map((key) => ({
        segments: at,
        message: `missing required key ${JSON.stringify(key)}`,
      }))
    case 'type': {
      const type = params['type']
      return [{ segments: at, message: `expected ${Array.isArray(type) ? type.join(' or ') : String(type)}` }]
    }
    case 'const':
      return [{ segments: at, message: `expected ${JSON.stringify(params['allowedValue'])}` }]
    case 'pattern':
      return [{ segments: at, message: `expected a string matching ${String(params['pattern'])}` }]
    case 'minimum':
    case 'maximum':
    case 'exclusiveMinimum':
    case 'exclusiveMaximum':
      return [
        {
          segments: at,
          message: `expected a number ${String(params['comparison'])} ${String(params['limit'])}`,
        },
      ]
    case 'minLength':
      return [{ segments: at, message: `expected at least ${String(params['limit'])} characters` }]
    case 'maxLength':
      return [{ segments: at, message: `expected at most ${String(params['limit'])} characters` }]
    case 'minItems':
      return [{ segments: at, message: `expected at least ${String(params['limit'])} items` }]
    case 'maxItems':
      return [{ segments: at, message: `expected at most ${String(params['limit'])} items` }]
    default:
      return [{ segments: at, message: error.message }]
  }
}

/** The first `anyOf` on a schema path, with how many instance segments lead to it. */
function unionInPath(schemaSegments: string[]): { schemaLength: number; depth: number } | undefined {
  let depth = 0
  let index = 0
  while (index < schemaSegments.length) {
    const segment = schemaSegments[index]
    if (segment === 'anyOf') return { schemaLength: index, depth }
    if (segment === 'properties' || segment === 'patternProperties') {
      depth += 1
      index += 2
    } else if (segment === 'items' || segment === 'additionalProperties') {
      depth += 1
      index += 1
    } else {
      return undefined
    }
  }
  return undefined
}

/** A key whose value is a `const` in every branch, such as `kind` in systems and store. */
function discriminatorOf(branches: JsonSchema[]): string | undefined {
  const first = branches[0]
  if (first === undefined || !isPlainObject(first['properties'])) return undefined
  return Object.keys(first['properties']).find((key) =>
    branches.every((branch) => constOf(branch, key) !== undefined),
  )
}

function constOf(branch: JsonSchema, key: string): unknown {
  const properties = branch['properties']
  if (!isPlainObject(properties)) return undefined
  const property = properties[key]
  return isPlainObject(property) ? property['const'] : undefined
}

function typeMatches(schema: JsonSchema, value: unknown): boolean {
  if (Array.isArray(schema['anyOf']))
    return (schema['anyOf'] as JsonSchema[]).some((b) => typeMatches(b, value))
  if ('const' in schema) return typeof schema['const'] === typeof value
  switch (schema['type']) {
    case 'integer':
      return Number.isInteger(value)
    case 'number':
      return typeof value === 'number'
    case 'string':
      return typeof value === 'string'
    case 'boolean':
      return typeof value === 'boolean'
    case 'null':
      return value === null
    case 'array':
      return Array.isArray(value)
    case 'object':
      return isPlainObject(value)
    default:
      return true
  }
}

function describeType(schema: JsonSchema): string {
  if (Array.isArray(schema['anyOf'])) return (schema['anyOf'] as JsonSchema[]).map(describeType).join(' or ')
  if ('const' in schema) return JSON.stringify(schema['const'])
  return typeof schema['type'] === 'string' ? schema['type'] : 'a valid value'
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return value !== null && typeof value === 'object' && !Array.isArray(value)
}

/** RFC 6901 pointer (optionally `#`-prefixed) to its unescaped segments. */
function decodePointer(pointer: string): string[] {
  const body = pointer.startsWith('#') ? pointer.slice(1) : pointer
  if (body === '') return []
  return body
    .slice(1)
    .split('/')
    .map((segment) => segment.replace(/~1/g, '/').replace(/~0/g, '~'))
}

function resolvePointer(schema: JsonSchema, segments: string[]): JsonSchema {
  let node: unknown = schema
  for (const segment of segments) node = (node as Record<string, unknown>)[segment]
  return node as JsonSchema
}

/** Pointer segments to path segments: an index into an array becomes a number. */
function toSegments(segments: string[], root: unknown): Segment[] {
  const out: Segment[] = []
  let node = root
  for (const segment of segments) {
    if (Array.isArray(node)) {
      out.push(Number(segment))
      node = node[Number(segment)]
    } else {
      out.push(segment)
      node = isPlainObject(node) ? node[segment] : undefined
    }
  }
  return out
}

function valueAt(root: unknown, segments: Segment[]): unknown {
  let node = root
  for (const segment of segments) {
    if (Array.isArray(node) && typeof segment === 'number') node = node[segment]
    else if (isPlainObject(node)) node = node[String(segment)]
    else return undefined
  }
  return node
}

// ---------------------------------------------------------------------------------------------
// Findings → problems with positions

function toProblems(
  findings: Finding[],
  doc: Document,
  position: (offset: number) => { line: number; column: number },
): ConfigProblem[] {
  const seen = new Set<string>()
  const problems: ConfigProblem[] = []
  for (const finding of findings) {
    const path = formatPath(finding.segments)
    const key = `${path}\u0000${finding.message}`
    if (seen.has(key)) continue
    seen.add(key)
    const offset = locate(doc, finding.segments, finding.atKey === true)
    problems.push(
      offset === undefined
        ? { path, message: finding.message }
        : { path, ...position(offset), message: finding.message },
    )
  }
  // Stable: problems on one line keep the order the schema reported them in.
  return problems.sort(
    (a, b) =>
      (a.line ?? Number.MAX_SAFE_INTEGER) - (b.line ?? Number.MAX_SAFE_INTEGER) ||
      (a.column ?? 0) - (b.column ?? 0),
  )
}

/** The source offset of the node at a path, or of its nearest existing parent. */
function locate(doc: Document, segments: Segment[], atKey: boolean): number | undefined {
  let node: unknown = doc.contents
  let found: Node | undefined = isNode(node) ? node : undefined
  for (const [index, segment] of segments.entries()) {
    if (isAlias(node)) node = node.resolve(doc)
    if (isMap(node)) {
      const pair = node.items.find((item) => keySegment(item.key) === String(segment))
      if (pair === undefined) break
      const last = index === segments.length - 1
      if ((last && atKey) || !isNode(pair.value)) {
        if (isNode(pair.key)) found = pair.key
        break
      }
      node = pair.value
    } else if (isSeq(node) && typeof segment === 'number') {
      node = node.items[segment]
    } else {
      break
    }
    if (!isNode(node)) break
    found = node
  }
  return found?.range?.[0]
}

function oneLine(text: string): string {
  return text.replace(/\s*\n\s*/g, ' ').trim()
}

function errorMessage(error: unknown): string {
  return error instanceof Error ? error.message : String(error)
}

const fsReasons: Record<string, string> = {
  ENOENT: 'no such file or directory',
  EISDIR: 'is a directory',
  EACCES: 'permission denied',
  EPERM: 'operation not permitted',
  ENOTDIR: 'a parent is not a directory',
}

/** A short reason for a failed read, without the stack or the full error text. */
function fsReason(error: unknown): string {
  const code = (error as { code?: unknown } | null)?.code
  if (typeof code === 'string') return `${fsReasons[code] ?? 'read failed'} (${code})`
  return oneLine(errorMessage(error))
}
