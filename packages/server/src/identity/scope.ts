/**
 * Token scopes (DESIGN §5): space-separated tokens (RFC 6749 §3.3), each `tool:action`,
 * `tool:*` (every action of the tool) or `channel:NAME`. Names use the character set of tool,
 * system and channel names in the config, so a scope can never smuggle a separator or a pattern.
 */
import { GatewayError } from '../errors/gateway-error.ts'

const name = '[A-Za-z0-9_-]{1,64}'
// `channel` is not a tool name, so `channel:*` matches neither branch.
const scopeToken = new RegExp(`^(?:channel:${name}|(?!channel:)${name}:(?:${name}|\\*))$`)
const maxScopes = 256

function quote(token: string): string {
  return JSON.stringify(token.length > 64 ? `${token.slice(0, 64)}…` : token)
}

/** Parse a scope string into distinct tokens, in first-seen order; `invalid_scope` on a bad token. */
export function parseScope(text: string | undefined): string[] {
  if (text === undefined) return []
  const seen = new Set<string>()
  for (const token of text.split(' ')) {
    if (token === '') continue
    if (!scopeToken.test(token)) {
      throw new GatewayError(
        'invalid_scope',
        `scope ${quote(token)} is not tool:action, tool:* or channel:NAME`,
      )
    }
    seen.add(token)
    if (seen.size > maxScopes)
      throw new GatewayError('invalid_scope', `at most ${maxScopes} scopes may be requested`)
  }
  return [...seen]
}

/** The wire form of a scope list (RFC 6749 §3.3). */
export function formatScope(scopes: readonly string[]): string {
  return scopes.join(' ')
}

/**
 * True when every requested scope is granted: exactly, or for `tool:action` by a `tool:*`
 * grant. `tool:*` is only covered by `tool:*`, so asking for it never widens a grant of
 * single actions, and `channel:*` is not a scope at all.
 */
export function isSubset(requested: readonly string[], granted: readonly string[]): boolean {
  return requested.every((scope) => {
    if (granted.includes(scope)) return true
    const colon = scope.indexOf(':')
    const tool = scope.slice(0, colon)
    return tool !== 'channel' && granted.includes(`${tool}:*`)
  })
}

/** True when the scopes grant access to channel `channelName`. */
export function hasChannel(scopes: readonly string[], channelName: string): boolean {
  return scopes.includes(`channel:${channelName}`)
}
