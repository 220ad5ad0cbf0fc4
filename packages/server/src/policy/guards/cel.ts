/**
 * `when` conditions (DESIGN §7): CEL expressions over `args`, `agent`, `token`, `request` and
 * `now`, parsed and type-checked once at policy compile time, evaluated per call. Nothing here
 * throws: a parse, type or run-time error, and a result that is not a bool, come back as
 * `{ok: false, reason}` so the caller can deny (fail closed) and say why.
 *
 * Numbers: JSON numbers reach CEL as JS numbers, which cel-js treats as `double`, as cel-go does
 * for JSON. Comparisons across numeric types work (`args.num <= 10` holds for 5 and 5.5), so
 * `args` is passed as is, without a per-call copy; arithmetic does not mix types (`args.num + 1`
 * is an error, write `args.num + 1.0` or `int(args.num) + 1`), and `size()` returns an int.
 *
 * Cost: the parser limits (`celLimits`) bound the expression; `matches` needs a literal pattern
 * that passes the regex screen (an agent must not choose the regex its arguments are matched
 * with); and a comprehension (`all`, `exists`, `exists_one`, `map`, `filter`) nested in another
 * must range over the outer element (`args.items.all(i, i.tags.exists(t, t == "x"))`) or over a
 * literal, so that a natural nested condition costs the size of `args`, not its square.
 */
import { Environment, type ParseResult } from '@marcbachmann/cel-js'
import { regexSafetyProblem } from '../filters/regex-safety.ts'

/** The variables a condition sees. */
export interface CelVars {
  /** The call's arguments, as parsed from JSON. */
  readonly args: unknown
  readonly agent: {
    readonly id: string
    readonly name: string
    readonly labels: Readonly<Record<string, string>>
    readonly roles: readonly string[]
  }
  readonly token: {
    readonly scope: readonly string[]
    readonly intent?: string
    readonly jti: string
    readonly [claim: string]: unknown
  }
  readonly request: {
    readonly method: string
    readonly path: string
    readonly bytes: number
    readonly ip: string
    readonly tool?: string
    readonly action?: string
    readonly channel?: string
  }
  readonly now: Date
}

/** The outcome of one evaluation: a bool, or the reason it could not be computed. */
export type CelEvaluation = { ok: true; value: boolean } | { ok: false; reason: string }

/** A condition compiled once, evaluated per call. */
export interface CompiledCondition {
  readonly source: string
  evaluate(vars: CelVars): CelEvaluation
}

/** Longest expression source accepted. */
export const maxExpressionLength = 4096

/** Structural limits applied while parsing. */
const celLimits = {
  maxAstNodes: 512,
  maxDepth: 32,
  maxListElements: 256,
  maxMapEntries: 256,
  maxCallArguments: 8,
} as const

const environment = new Environment({ limits: celLimits })
  .registerVariable('args', 'dyn')
  .registerVariable('agent', 'map')
  .registerVariable('token', 'map')
  .registerVariable('request', 'map')
  .registerVariable('now', 'google.protobuf.Timestamp')

const comprehensions = new Set(['all', 'exists', 'exists_one', 'map', 'filter'])
const yes: CelEvaluation = Object.freeze({ ok: true, value: true })
const no: CelEvaluation = Object.freeze({ ok: true, value: false })
const maxReasonLength = 200

/** Parse and check `expression`; the reason says what is wrong and where. */
export function compileCondition(
  expression: string,
): { ok: true; condition: CompiledCondition } | { ok: false; reason: string } {
  if (typeof expression !== 'string' || expression.trim() === '') {
    return { ok: false, reason: 'expected a non-empty CEL expression' }
  }
  if (expression.length > maxExpressionLength) {
    return { ok: false, reason: `expression is longer than ${maxExpressionLength} characters` }
  }
  let parsed: ParseResult
  try {
    parsed = environment.parse(expression)
  } catch (err) {
    return { ok: false, reason: describeError(err) }
  }
  let checked: ReturnType<ParseResult['check']>
  try {
    checked = parsed.check()
  } catch (err) {
    return { ok: false, reason: describeError(err) }
  }
  if (!checked.valid) return { ok: false, reason: describeError(checked.error) }
  if (checked.type !== 'bool' && checked.type !== 'dyn') {
    return { ok: false, reason: `expression must be a bool, it is ${checked.type}` }
  }
  const unsafe = costProblem(parsed.ast as unknown as AstNode)
  if (unsafe !== undefined) return { ok: false, reason: unsafe }

  const source = expression
  const condition: CompiledCondition = {
    source,
    evaluate(vars) {
      let value: unknown
      try {
        value = parsed(vars as unknown as Record<string, unknown>)
      } catch (err) {
        return { ok: false, reason: describeError(err) }
      }
      if (value === true) return yes
      if (value === false) return no
      return { ok: false, reason: `expression returned ${typeName(value)}, not a bool` }
    },
  }
  return { ok: true, condition }
}

/** The parts of cel-js's AST nodes this module reads. */
interface AstNode {
  readonly op: string
  readonly args: unknown
}

function isNode(value: unknown): value is AstNode {
  return typeof value === 'object' && value !== null && typeof (value as AstNode).op === 'string'
}

/**
 * Walk the AST (iteratively) for the cost rules in the header: literal, screened `matches`
 * patterns and comprehensions nested only over their enclosing element.
 */
function costProblem(root: AstNode): string | undefined {
  // Each entry: a node and the loop variables of the comprehensions enclosing it (undefined at top level).
  const stack: [AstNode, readonly string[] | undefined][] = [[root, undefined]]
  while (stack.length > 0) {
    const [node, loopVars] = stack.pop()!
    // cel-js has only the receiver form of matches(); macros are receiver calls too.
    if (node.op === 'rcall') {
      const [name, receiver, operands] = node.args as [string, AstNode, unknown[]]
      if (name === 'matches') {
        const pattern = operands[0]
        if (!isNode(pattern) || pattern.op !== 'value' || typeof pattern.args !== 'string') {
          return 'matches() needs a string literal pattern'
        }
        const problem = regexSafetyProblem(pattern.args)
        if (problem !== undefined) return `matches() pattern refused: ${problem}`
        try {
          new RegExp(pattern.args)
        } catch (err) {
          return `matches() pattern is invalid: ${(err as Error).message}`
        }
      }
      if (comprehensions.has(name)) {
        const loopVar = operands[0]
        if (loopVars !== undefined && !rangesOverElement(receiver, loopVars)) {
          return `${name}() inside another comprehension must range over the outer element or a literal list, not over args again: its cost would grow with the square of the input`
        }
        stack.push([receiver, loopVars])
        const inner =
          isNode(loopVar) && loopVar.op === 'id' ? [...(loopVars ?? []), loopVar.args as string] : loopVars
        for (let i = 1; i < operands.length; i++) {
          const operand = operands[i]
          if (isNode(operand)) stack.push([operand, inner ?? []])
        }
        continue
      }
    }
    pushChildren(node.args, loopVars, stack)
  }
  return undefined
}

function pushChildren(
  value: unknown,
  loopVars: readonly string[] | undefined,
  stack: [AstNode, readonly string[] | undefined][],
): void {
  const pending: unknown[] = [value]
  while (pending.length > 0) {
    const item = pending.pop()
    if (isNode(item)) stack.push([item, loopVars])
    else if (Array.isArray(item)) for (const element of item) pending.push(element)
  }
}

/** True when `range` is a literal list or map, or a selection rooted at an enclosing loop variable. */
function rangesOverElement(range: AstNode, loopVars: readonly string[]): boolean {
  let node = range
  for (;;) {
    if (node.op === 'list' || node.op === 'map') return true
    if (node.op === 'id') return loopVars.includes(node.args as string)
    if (node.op === '.' || node.op === '.?' || node.op === '[]' || node.op === '[?]') {
      node = (node.args as AstNode[])[0]!
    } else if (node.op === 'rcall') {
      node = (node.args as AstNode[])[1]!
    } else {
      return false
    }
  }
}

function describeError(err: unknown): string {
  let text: string
  if (err instanceof Error) {
    const { summary, range } = err as Error & { summary?: unknown; range?: { start?: unknown } }
    text = typeof summary === 'string' ? summary : (err.message.split('\n', 1)[0] ?? err.name)
    if (typeof range?.start === 'number') text += ` (at column ${range.start + 1})`
  } else {
    text = String(err)
  }
  return text.length > maxReasonLength ? `${text.slice(0, maxReasonLength)}…` : text
}

function typeName(value: unknown): string {
  if (value === null) return 'null'
  if (Array.isArray(value)) return 'a list'
  if (value instanceof Date) return 'a timestamp'
  switch (typeof value) {
    case 'bigint':
      return 'an int'
    case 'number':
      return 'a double'
    case 'string':
      return 'a string'
    case 'object':
      return 'a map'
    default:
      return typeof value
  }
}
