/**
 * Response filters (DESIGN §7), applied to what the agent receives, after any cache. A filter
 * replaces what its JSON paths select by `"[REDACTED:path]"` (the whole value), and inside every
 * other string replaces what its detectors find by `[REDACTED:kind]`. Integers of 13 digits or
 * more are scanned as text (a card number sent as a JSON number). Object keys are scanned too (a
 * map keyed by e-mail address must not leak them); a redacted key that collides with another
 * gets a ` (2)`, ` (3)` suffix. Custom `patterns` always apply; `redact` names built-in detectors
 * (and may name the custom ones). The input is never mutated: containers are copied only along
 * the way to a change, so an untouched response comes back as the same object. The walk is
 * iterative, so depth is no risk.
 */
import {
  builtinDetector,
  builtinsInOrder,
  compileCustomDetectors,
  type Detector,
  type DetectorProblem,
  redactText,
} from './detectors.ts'
import { markPath, type PathStep, parseJsonPath } from './json-path.ts'

/** A filter as written in a policy rule. */
export interface ResponseFilterSpec {
  readonly redact?: readonly string[]
  readonly paths?: readonly string[]
  readonly patterns?: Readonly<Record<string, string>>
}

/** Redaction counts by kind (detector name, or `path`); kinds with no redaction are absent. */
export type Redactions = Record<string, number>

/** A compiled filter. */
export interface ResponseFilter {
  /** Filter a parsed JSON value. */
  apply(value: unknown): { value: unknown; redactions: Redactions }
  /** Filter a text body (detectors only: paths need JSON). */
  applyText(text: string): { value: string; redactions: Redactions }
}

/** A refused part of a filter: `redact[1]`, `paths[0]`, `patterns.name`, and why. */
export type ResponseFilterProblem = DetectorProblem

interface Parts {
  readonly detectors: readonly Detector[]
  readonly paths: readonly (readonly PathStep[])[]
}

// The parts behind each filter this module built, so that combineFilters can merge them into
// one walk.
const partsOf = new WeakMap<ResponseFilter, Parts>()

/** Validate and compile a filter; problems name each refused entry. */
export function compileResponseFilter(
  spec: ResponseFilterSpec,
): { ok: true; filter: ResponseFilter } | { ok: false; problems: ResponseFilterProblem[] } {
  const problems: ResponseFilterProblem[] = []
  let custom: Detector[] = []
  if (spec.patterns !== undefined) {
    const compiled = compileCustomDetectors(spec.patterns)
    if (compiled.ok) custom = compiled.detectors
    else problems.push(...compiled.problems)
  }
  const builtins = new Set<string>()
  if (spec.redact !== undefined) {
    if (!Array.isArray(spec.redact))
      problems.push({ path: 'redact', reason: 'expected a list of detector names' })
    else
      spec.redact.forEach((name, i) => {
        if (typeof name === 'string' && builtinDetector(name) !== undefined) builtins.add(name)
        else if (typeof name !== 'string' || !Object.hasOwn(spec.patterns ?? {}, name)) {
          problems.push({
            path: `redact[${i}]`,
            reason: `unknown detector ${JSON.stringify(name)}: expected email, card, phone, api_key, jwt or a name from patterns`,
          })
        }
      })
  }
  const paths: PathStep[][] = []
  if (spec.paths !== undefined) {
    if (!Array.isArray(spec.paths)) problems.push({ path: 'paths', reason: 'expected a list of JSON paths' })
    else
      spec.paths.forEach((path, i) => {
        const parsed = parseJsonPath(path)
        if (parsed.ok) paths.push(parsed.steps)
        else problems.push({ path: `paths[${i}]`, reason: parsed.reason })
      })
  }
  if (problems.length > 0) return { ok: false, problems }
  return { ok: true, filter: build({ detectors: [...builtinsInOrder(builtins), ...custom], paths }) }
}

/** One filter doing the work of all of `filters` in a single walk. */
export function combineFilters(filters: readonly ResponseFilter[]): ResponseFilter {
  if (filters.length === 1) return filters[0]!
  const builtinNames = new Set<string>()
  const custom: Detector[] = []
  const paths: (readonly PathStep[])[] = []
  const foreign: ResponseFilter[] = []
  for (const filter of filters) {
    const parts = partsOf.get(filter)
    if (parts === undefined) {
      foreign.push(filter)
      continue
    }
    for (const detector of parts.detectors) {
      if (builtinDetector(detector.name) === detector) builtinNames.add(detector.name)
      else if (!custom.includes(detector)) custom.push(detector)
    }
    paths.push(...parts.paths)
  }
  const merged = build({ detectors: [...builtinsInOrder(builtinNames), ...custom], paths })
  if (foreign.length === 0) return merged
  return sequence([merged, ...foreign])
}

function sequence(filters: readonly ResponseFilter[]): ResponseFilter {
  const run = <T>(
    value: T,
    step: (filter: ResponseFilter, value: T) => { value: T; redactions: Redactions },
  ) => {
    const redactions: Redactions = {}
    let current = value
    for (const filter of filters) {
      const result = step(filter, current)
      current = result.value
      for (const [kind, n] of Object.entries(result.redactions)) {
        redactions[kind] = (Object.hasOwn(redactions, kind) ? redactions[kind]! : 0) + n
      }
    }
    return { value: current, redactions }
  }
  return {
    apply: (value) => run(value, (filter, v) => filter.apply(v)),
    applyText: (text) => run(text, (filter, t) => filter.applyText(t)),
  }
}

function build(parts: Parts): ResponseFilter {
  const filter: ResponseFilter = {
    apply: (value) => {
      const redactions: Redactions = {}
      return { value: filterValue(value, parts, redactions), redactions }
    },
    applyText: (text) => {
      const redactions: Redactions = {}
      return { value: redactText(text, parts.detectors, redactions), redactions }
    },
  }
  partsOf.set(filter, parts)
  return filter
}

const pathMarker = '[REDACTED:path]'
// Integers this large may be card numbers written as JSON numbers; smaller ones cannot be.
const minScannedInteger = 1e12

function scanScalar(value: unknown, detectors: readonly Detector[], counts: Redactions): unknown {
  if (typeof value === 'string') return detectors.length > 0 ? redactText(value, detectors, counts) : value
  if (
    typeof value === 'number' &&
    detectors.length > 0 &&
    Number.isInteger(value) &&
    Math.abs(value) >= minScannedInteger
  ) {
    const text = String(value)
    const redacted = redactText(text, detectors, counts)
    return redacted === text ? value : redacted
  }
  return value
}

interface Frame {
  readonly src: object
  /** Object keys, or null for an array. */
  readonly keys: string[] | null
  /** Object keys after redaction, when any changed. */
  readonly renamed: string[] | null
  readonly marks: Set<string | number> | undefined
  readonly parent: Frame | undefined
  readonly indexInParent: number
  /** Child values by index, once one of them changed. */
  values: unknown[] | null
  i: number
}

function filterValue(root: unknown, parts: Parts, counts: Redactions): unknown {
  const { detectors } = parts
  if (typeof root !== 'object' || root === null) return scanScalar(root, detectors, counts)
  const marks = new Map<object, Set<string | number>>()
  for (const steps of parts.paths) markPath(root, steps, marks)

  const open = (src: object, parent: Frame | undefined, indexInParent: number): Frame => {
    let keys: string[] | null = null
    let renamed: string[] | null = null
    if (!Array.isArray(src)) {
      keys = Object.keys(src)
      if (detectors.length > 0) {
        for (let k = 0; k < keys.length; k++) {
          const key = keys[k]!
          const redacted = redactText(key, detectors, counts)
          if (redacted === key) continue
          renamed ??= [...keys]
          renamed[k] = redacted
        }
      }
    }
    return { src, keys, renamed, marks: marks.get(src), parent, indexInParent, values: null, i: 0 }
  }
  const set = (frame: Frame, i: number, value: unknown) => {
    if (frame.values === null) {
      const src = frame.src as Record<string, unknown>
      frame.values =
        frame.keys === null ? (frame.src as unknown[]).slice() : frame.keys.map((key) => src[key])
    }
    frame.values[i] = value
  }

  const stack: Frame[] = [open(root, undefined, 0)]
  let result: unknown = root
  while (stack.length > 0) {
    const frame = stack[stack.length - 1]!
    const { keys } = frame
    const length = keys === null ? (frame.src as unknown[]).length : keys.length
    if (frame.i < length) {
      const i = frame.i++
      const key = keys === null ? i : keys[i]!
      const child = (frame.src as Record<string | number, unknown>)[key]
      if (frame.marks?.has(key)) {
        set(frame, i, pathMarker)
        counts.path = (Object.hasOwn(counts, 'path') ? counts.path! : 0) + 1
      } else if (typeof child === 'object' && child !== null) {
        stack.push(open(child, frame, i))
      } else {
        const scanned = scanScalar(child, detectors, counts)
        if (scanned !== child) set(frame, i, scanned)
      }
      continue
    }
    stack.pop()
    const built = close(frame)
    if (frame.parent === undefined) result = built
    else if (built !== frame.src) set(frame.parent, frame.indexInParent, built)
  }
  return result
}

/** The filtered container: the source itself when nothing in it changed. */
function close(frame: Frame): object {
  const { keys, renamed, src } = frame
  if (frame.values === null && renamed === null) return src
  if (keys === null) return frame.values!
  const values = frame.values
  const record = src as Record<string, unknown>
  const out: Record<string, unknown> = {}
  const names = renamed ?? keys
  // A redacted key avoids every original key, so it cannot take the place of a later one.
  const originals = renamed === null ? undefined : new Set(keys)
  for (let k = 0; k < names.length; k++) {
    let name = names[k]!
    if (originals !== undefined && name !== keys[k]) {
      for (let n = 2; Object.hasOwn(out, name) || originals.has(name); n++) name = `${names[k]} (${n})`
    }
    const value = values === null ? record[keys[k]!] : values[k]
    // A JSON "__proto__" member is an own property; plain assignment would set the prototype.
    if (name === '__proto__')
      Object.defineProperty(out, name, { value, writable: true, enumerable: true, configurable: true })
    else out[name] = value
  }
  return out
}
