/**
 * `@4runr/gateway`: the TypeScript client of 4Runr Gateway. `GatewayClient` is the agent's side
 * (token exchange, DPoP, tool calls), `AdminClient` the operator's (the admin listener).
 */
export {
  AdminClient,
  type AdminClientOptions,
  type AgentRecord,
  type Approval,
  type CreatedAgent,
  type TokenAnswer,
} from './admin-client.ts'
export {
  ApprovalRequired,
  type ApprovalWaitOptions,
  AuthError,
  CircuitOpenError,
  type ErrorCode,
  GatewayError,
  type GatewayErrorInit,
  NetworkError,
  PolicyError,
  QuotaError,
  RateLimitError,
  TimeoutError,
  UpstreamError,
} from './errors.ts'
export { GatewayClient, type GatewayClientOptions } from './gateway-client.ts'
export type { Jwk } from './jws.ts'
export type { PrivateKeyInput } from './keys.ts'
export { backoffDelay, type RetryOptions } from './retry.ts'
export type * from './types.ts'
