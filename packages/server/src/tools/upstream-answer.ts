/**
 * Reading an upstream's answer the same way for every tool: a non-2xx status or a body that is not
 * the JSON the API documents becomes `502 upstream_error` carrying the upstream status. The
 * upstream's own error text is not passed on: it can echo the credential we sent.
 */
import { GatewayError } from '../errors/gateway-error.ts'
import type { UpstreamAnswer } from './types.ts'

export function expectJson(tool: string, answer: UpstreamAnswer): unknown {
  if (answer.status < 200 || answer.status > 299) {
    throw new GatewayError('upstream_error', `The ${tool} upstream answered ${answer.status}.`, {
      details: { upstreamStatus: answer.status },
    })
  }
  if (answer.json === undefined) {
    throw new GatewayError('upstream_error', `The ${tool} upstream did not answer JSON.`, {
      details: { upstreamStatus: answer.status },
    })
  }
  return answer.json
}
