/**
 * A conservative screen for regular expressions that operators write (custom detectors, CEL
 * `matches`): JavaScript's engine backtracks, so a repeated group that itself holds a quantifier
 * or an alternation (`(a+)+`, `(a|a)*`, `(\d?\d?)+`) can take exponential time on a crafted
 * string, and backreferences can too. Such patterns are refused with a reason; the screen does
 * not prove the rest linear (`\d+x` is still quadratic), which is why scans are also windowed.
 */

/** Longest pattern source accepted. */
export const maxRegexLength = 1000

interface Group {
  quantified: boolean
  alternated: boolean
}

const boundedRepeat = /\{(\d+)(,(\d*))?\}/y

/** Why `source` is refused, or undefined when it passes the screen (it may still fail to compile). */
export function regexSafetyProblem(source: string): string | undefined {
  if (source.length > maxRegexLength) return `pattern is longer than ${maxRegexLength} characters`
  const stack: Group[] = [{ quantified: false, alternated: false }]
  // The group just closed, when the next token may quantify it.
  let closed: Group | undefined
  let i = 0
  while (i < source.length) {
    const c = source[i]!
    if (c === '\\') {
      const next = source[i + 1]
      if ((next !== undefined && next >= '1' && next <= '9') || (next === 'k' && source[i + 2] === '<')) {
        return 'backreferences are not allowed: they can take exponential time'
      }
      if ((next === 'u' || next === 'p' || next === 'P') && source[i + 2] === '{') {
        const end = source.indexOf('}', i)
        i = end < 0 ? source.length : end + 1
      } else {
        i += 2
      }
      closed = undefined
      continue
    }
    if (c === '[') {
      i++
      while (i < source.length && source[i] !== ']') i += source[i] === '\\' ? 2 : 1
      i++
      closed = undefined
      continue
    }
    if (c === '(') {
      stack.push({ quantified: false, alternated: false })
      i++
      // `(?:`, `(?=`, `(?!`, `(?<=`, `(?<!` and `(?<name>` open groups; their `?` quantifies nothing.
      if (source[i] === '?') {
        i++
        if (source[i] === '<' && source[i + 1] !== '=' && source[i + 1] !== '!') {
          const end = source.indexOf('>', i)
          i = end < 0 ? source.length : end + 1
        } else {
          i += source[i] === '<' ? 2 : 1
        }
      }
      closed = undefined
      continue
    }
    if (c === ')') {
      const group = stack.length > 1 ? stack.pop()! : { quantified: false, alternated: false }
      const parent = stack[stack.length - 1]!
      // What makes a repetition of the parent dangerous is anywhere inside it, nested groups included.
      parent.quantified ||= group.quantified
      parent.alternated ||= group.alternated
      closed = group
      i++
      continue
    }
    if (c === '|') {
      stack[stack.length - 1]!.alternated = true
      i++
      closed = undefined
      continue
    }
    let repeats: boolean | undefined
    let length = 1
    if (c === '*' || c === '+') repeats = true
    else if (c === '?') repeats = false
    else if (c === '{') {
      boundedRepeat.lastIndex = i
      const m = boundedRepeat.exec(source)
      if (m !== null) {
        length = m[0].length
        const max = m[2] === undefined ? Number(m[1]) : m[3] === '' ? Number.POSITIVE_INFINITY : Number(m[3])
        repeats = max > 1
      }
    }
    if (repeats === undefined) {
      i++
      closed = undefined
      continue
    }
    if (repeats && closed !== undefined && (closed.quantified || closed.alternated)) {
      return closed.quantified
        ? 'nested quantifier: a repeated group holds a quantifier, which can take exponential time'
        : 'repeated alternation: a repeated group holds |, which can take exponential time'
    }
    stack[stack.length - 1]!.quantified = true
    i += length
    // A lazy marker after a quantifier is part of it.
    if (source[i] === '?') i++
    closed = undefined
  }
  return undefined
}
