/**
 * The JSON path subset response filters accept: `$` then `.name`, `['name']`, `[0]`, `[-1]`
 * (from the end), `.*` / `[*]` (every member), and `..` before any of those for recursive
 * descent (`$..password`: every `password` member at any depth). Selection walks iteratively
 * and visits each container at most once per step, so `$..a..b` stays linear in the value.
 */

type Selector = { kind: 'name'; name: string } | { kind: 'index'; index: number } | { kind: 'any' }

/** One step: a selector, applied to the current containers or (descend) to all their descendants. */
export interface PathStep {
  readonly descend: boolean
  readonly select: Selector
}

/** Longest path accepted. */
export const maxPathLength = 256

const name = /[A-Za-z0-9_$-]+/y
const index = /-?\d{1,9}/y
const quoted = /'((?:[^'\\]|\\.)*)'|"((?:[^"\\]|\\.)*)"/y

/** Parse `path`, or say why it is refused. */
export function parseJsonPath(path: string): { ok: true; steps: PathStep[] } | { ok: false; reason: string } {
  if (typeof path !== 'string' || !path.startsWith('$'))
    return { ok: false, reason: 'a JSON path starts with $' }
  if (path.length > maxPathLength)
    return { ok: false, reason: `path is longer than ${maxPathLength} characters` }
  const steps: PathStep[] = []
  let i = 1
  const fail = (what: string) => ({ ok: false as const, reason: `${what} at character ${i + 1}` })
  while (i < path.length) {
    let descend = false
    if (path.startsWith('..', i)) {
      descend = true
      i += 2
    } else if (path[i] === '.') {
      i++
    } else if (path[i] !== '[') {
      return fail('expected . or [')
    }
    if (path[i] === '*') {
      steps.push({ descend, select: { kind: 'any' } })
      i++
      continue
    }
    if (path[i] !== '[') {
      name.lastIndex = i
      const m = name.exec(path)
      if (m === null) return fail('expected a member name')
      steps.push({ descend, select: { kind: 'name', name: m[0] } })
      i = name.lastIndex
      continue
    }
    i++
    let select: Selector
    if (path[i] === '*') {
      select = { kind: 'any' }
      i++
    } else if (path[i] === "'" || path[i] === '"') {
      quoted.lastIndex = i
      const m = quoted.exec(path)
      if (m === null) return fail('unterminated quoted name')
      select = { kind: 'name', name: (m[1] ?? m[2] ?? '').replace(/\\(.)/g, '$1') }
      i = quoted.lastIndex
    } else {
      index.lastIndex = i
      const m = index.exec(path)
      if (m === null) return fail('expected an index, * or a quoted name')
      select = { kind: 'index', index: Number(m[0]) }
      i = index.lastIndex
    }
    if (path[i] !== ']') return fail('expected ]')
    i++
    steps.push({ descend, select })
  }
  if (steps.length === 0) return { ok: false, reason: '$ alone would select the whole response' }
  return { ok: true, steps }
}

function isContainer(value: unknown): value is object {
  return typeof value === 'object' && value !== null
}

/**
 * Add to `marks` every (container, key) that `steps` select in `root`: array keys as numbers,
 * object keys as strings.
 */
export function markPath(
  root: unknown,
  steps: readonly PathStep[],
  marks: Map<object, Set<string | number>>,
): void {
  let current: object[] = isContainer(root) ? [root] : []
  for (let s = 0; s < steps.length && current.length > 0; s++) {
    const step = steps[s]!
    const last = s === steps.length - 1
    const sources = step.descend ? selfAndDescendants(current) : current
    const next = new Set<object>()
    for (const source of sources) {
      const select = (key: string | number, child: unknown) => {
        if (last) {
          const keys = marks.get(source)
          if (keys === undefined) marks.set(source, new Set([key]))
          else keys.add(key)
        } else if (isContainer(child)) {
          next.add(child)
        }
      }
      const { select: selector } = step
      if (Array.isArray(source)) {
        if (selector.kind === 'any') {
          for (let i = 0; i < source.length; i++) select(i, source[i])
        } else if (selector.kind === 'index') {
          const i = selector.index < 0 ? source.length + selector.index : selector.index
          if (i >= 0 && i < source.length) select(i, source[i])
        }
      } else {
        const record = source as Record<string, unknown>
        if (selector.kind === 'any') for (const key of Object.keys(record)) select(key, record[key])
        else if (selector.kind === 'name' && Object.hasOwn(record, selector.name)) {
          select(selector.name, record[selector.name])
        }
      }
    }
    current = [...next]
  }
}

function selfAndDescendants(roots: readonly object[]): object[] {
  const seen = new Set<object>()
  const stack = [...roots]
  while (stack.length > 0) {
    const node = stack.pop()!
    if (seen.has(node)) continue
    seen.add(node)
    for (const child of Array.isArray(node) ? node : Object.values(node)) {
      if (isContainer(child) && !seen.has(child)) stack.push(child)
    }
  }
  return [...seen]
}
