/** The GatewayError a call ends with; fails the test when it succeeds or throws something else. */
import assert from 'node:assert/strict'
import { GatewayError } from '../../packages/server/src/errors/gateway-error.ts'

export async function gatewayRejection(call: unknown): Promise<GatewayError> {
  try {
    await call
  } catch (err) {
    assert.ok(err instanceof GatewayError, String(err))
    return err
  }
  assert.fail('the call succeeded')
}
