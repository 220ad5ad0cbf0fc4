/**
 * The shape of call arguments, checked before any guard reads them, and their canonical JSON
 * spelling. Both walk iteratively: arguments are agent input, and a deeply nested value must
 * get a clear refusal, never a stack overflow.
 */

/** Limits for `checkArgsShape`. */
export interface ArgsShapeLimits {
  /** Deepest container nesting accepted: `{}` and `[]` are depth 1, a scalar depth 0. */
  readonly maxDepth?: number
  /** Most values (containers and scalars, the root included) accepted. */
  readonly maxNodes?: number
}

/** The outcome of a shape check. */
export type ArgsShapeCheck = { ok: true } | { ok: false; reason: 'too_deep' | 'too_many_nodes' }

const fine: ArgsShapeCheck = Object.freeze({ ok: true })
const tooDeep: ArgsShapeCheck = Object.freeze({ ok: false, reason: 'too_deep' })
const tooMany: ArgsShapeCheck = Object.freeze({ ok: false, reason: 'too_many_nodes' })

/** Refuse a value nested deeper than `maxDepth` or holding more than `maxNodes` values. */
export function checkArgsShape(value: unknown, limits: ArgsShapeLimits = {}): ArgsShapeCheck {
  const { maxDepth = 32, maxNodes = 10_000 } = limits
  let nodes = 1
  if (typeof value !== 'object' || value === null) return fine
  if (maxDepth < 1) return tooDeep
  const containers: object[] = [value]
  const depths: number[] = [1]
  while (containers.length > 0) {
    const container = containers.pop()!
    const depth = depths.pop()!
    const children: unknown[] = Array.isArray(container) ? container : Object.values(container)
    nodes += children.length
    // Checked before descending, so a cyclic value ends here too instead of looping forever.
    if (nodes > maxNodes) return tooMany
    for (const child of children) {
      if (typeof child !== 'object' || child === null) continue
      if (depth + 1 > maxDepth) return tooDeep
      containers.push(child)
      depths.push(depth + 1)
    }
  }
  return fine
}

/**
 * JSON with object keys sorted by UTF-16 code units (as RFC 8785 orders them), so equal values
 * always give the same string: loop-guard hashes and cache keys. Like JSON.stringify, `toJSON`
 * is honoured, undefined and functions are dropped from objects and become null in arrays, and
 * non-finite numbers become null; a bigint is written as its digits. A cyclic value throws a
 * TypeError (parsed JSON never is one).
 */
export function canonicalJson(value: unknown): string {
  let out = ''
  // Work items: a value to write, or literal text (punctuation, keys) to append as is.
  const work: { text?: string; value?: unknown; leave?: object }[] = [{ value }]
  const open = new Set<object>()
  while (work.length > 0) {
    const item = work.pop()!
    if (item.text !== undefined) {
      out += item.text
      continue
    }
    if (item.leave !== undefined) {
      open.delete(item.leave)
      continue
    }
    let current = item.value
    if (
      typeof current === 'object' &&
      current !== null &&
      typeof (current as { toJSON?: unknown }).toJSON === 'function'
    ) {
      current = (current as { toJSON: () => unknown }).toJSON()
    }
    out += scalar(current) ?? ''
    if (typeof current !== 'object' || current === null) continue
    if (open.has(current)) throw new TypeError('canonicalJson: the value is cyclic')
    open.add(current)
    work.push({ leave: current })
    if (Array.isArray(current)) {
      work.push({ text: ']' })
      for (let i = current.length - 1; i >= 0; i--) {
        const element = current[i]
        work.push(omitted(element) ? { text: 'null' } : { value: element })
        if (i > 0) work.push({ text: ',' })
      }
      out += '['
      continue
    }
    const record = current as Record<string, unknown>
    const keys = Object.keys(record)
      .filter((key) => !omitted(record[key]))
      .sort()
    work.push({ text: '}' })
    for (let i = keys.length - 1; i >= 0; i--) {
      const key = keys[i]!
      work.push({ value: record[key] })
      work.push({ text: `${i > 0 ? ',' : ''}${JSON.stringify(key)}:` })
    }
    out += '{'
  }
  return out
}

function omitted(value: unknown): boolean {
  return value === undefined || typeof value === 'function' || typeof value === 'symbol'
}

/** The JSON text of a non-container, or undefined for objects and arrays. */
function scalar(value: unknown): string | undefined {
  switch (typeof value) {
    case 'string':
      return JSON.stringify(value)
    case 'number':
      return Number.isFinite(value) ? String(value) : 'null'
    case 'bigint':
      return value.toString()
    case 'boolean':
      return value ? 'true' : 'false'
    case 'object':
      return value === null ? 'null' : undefined
    default:
      return 'null'
  }
}
