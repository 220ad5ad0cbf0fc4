/**
 * Header value templates: `"{{sub}}"`, `"agent-{{sub}}"`. A placeholder names a request value
 * (requestId, correlationId, channel, ip, method, path) or, once identity lands, a token claim
 * with a dotted path (`act.sub`). Compiled once per config version.
 */

/** Looks a placeholder name up for the request being served. */
export type TemplateLookup = (name: string) => string | undefined

export interface HeaderTemplate {
  /** The value when it has no placeholder; rendering is then free. */
  readonly literal: string | undefined
  /**
   * The rendered value, or undefined when a placeholder has no value for this request: the header
   * is then left out rather than sent empty (the client's copy is removed all the same).
   */
  render(lookup: TemplateLookup): string | undefined
}

const placeholder = /\{\{\s*([A-Za-z_][A-Za-z0-9_.]*)\s*\}\}/g

/** Compile a template; throws on an unclosed or malformed placeholder. */
export function compileTemplate(source: string): HeaderTemplate {
  const parts: Array<string | { name: string }> = []
  let last = 0
  for (const match of source.matchAll(placeholder)) {
    parts.push(source.slice(last, match.index))
    parts.push({ name: match[1]! })
    last = match.index + match[0].length
  }
  parts.push(source.slice(last))
  const literalParts = parts.filter((p): p is string => typeof p === 'string')
  if (literalParts.some((p) => p.includes('{{') || p.includes('}}'))) {
    throw new Error(`malformed placeholder in "${source}": use {{name}} with letters, digits, _ and .`)
  }
  if (parts.length === 1) {
    const literal = source
    return { literal, render: () => literal }
  }
  return {
    literal: undefined,
    render(lookup) {
      let out = ''
      for (const part of parts) {
        if (typeof part === 'string') {
          out += part
          continue
        }
        const value = lookup(part.name)
        if (value === undefined) return undefined
        // A value with CR/LF would split the header (response splitting); drop the header instead.
        if (/[\r\n\0]/.test(value)) return undefined
        out += value
      }
      return out
    },
  }
}
