/**
 * Channel and path-rule matching over the normalised path (DESIGN §8). A channel is reached by
 * its prefix (longest wins) or always by `/api/request/{channel}`; inside it, the first rule
 * whose pattern matches decides.
 */
import type { CompiledChannel, CompiledConfig, CompiledRule } from '../config/compile.ts'

export interface ChannelMatch {
  readonly channel: CompiledChannel
  /** The path below the channel's prefix ('' when the request named the prefix itself). */
  readonly remainder: string
  /** True when reached by the channel's prefix, false through /api/request/{channel}. */
  readonly viaPrefix: boolean
}

const requestPrefix = '/api/request/'

/** Find the channel for a normalised path, or undefined. */
export function matchChannel(config: CompiledConfig, path: string): ChannelMatch | undefined {
  if (path.startsWith(requestPrefix)) {
    const end = path.indexOf('/', requestPrefix.length)
    const name = path.slice(requestPrefix.length, end < 0 ? undefined : end)
    const channel = config.byName.get(name)
    return channel === undefined
      ? undefined
      : { channel, remainder: end < 0 ? '' : path.slice(end), viaPrefix: false }
  }
  let folded: string | undefined
  for (const channel of config.prefixed) {
    let candidate = path
    if (channel.caseInsensitive) {
      folded ??= path.toLowerCase()
      candidate = folded
    }
    const { prefix } = channel
    if (!candidate.startsWith(prefix)) continue
    if (candidate.length === prefix.length) return { channel, remainder: '', viaPrefix: true }
    if (candidate.charCodeAt(prefix.length) === 0x2f)
      return { channel, remainder: path.slice(prefix.length), viaPrefix: true }
  }
  return undefined
}

/** The first rule of `channel` matching `remainder`, or undefined (the request is then 404). */
export function matchRule(channel: CompiledChannel, remainder: string): CompiledRule | undefined {
  const path = remainder === '' ? '/' : channel.caseInsensitive ? remainder.toLowerCase() : remainder
  for (const rule of channel.rules) {
    if (rule.match === 'all') return rule
    if (rule.match === 'exact') {
      if (path === rule.base) return rule
      continue
    }
    if (path === rule.base || (path.startsWith(rule.base) && path.charCodeAt(rule.base.length) === 0x2f))
      return rule
  }
  return undefined
}

/** The path the upstream receives: the system's base path plus the channel-relative path. */
export function upstreamPath(match: ChannelMatch, fullPath: string): string {
  const { channel, remainder } = match
  // stripPrefix: false keeps the prefix as the client spelt it, or the configured one when the
  // request came through /api/request/{channel}.
  const tail = channel.stripPrefix
    ? remainder
    : match.viaPrefix
      ? fullPath
      : channel.prefixAsWritten + remainder
  const joined = channel.system.basePath + tail
  return joined === '' ? '/' : joined
}
