/** `GET /v1/config` and `POST /v1/config/reload` (DESIGN §3). */
import type { FastifyInstance } from 'fastify'
import { redactConfig } from '../config/redact.ts'
import type { ConfigSource } from '../config/source.ts'
import { GatewayError } from '../errors/gateway-error.ts'
import { sendError } from './admin-server.ts'

/** Routes over the running configuration. */
export function configRoutes(source: ConfigSource) {
  return (app: FastifyInstance): void => {
    app.get('/v1/config', async () => {
      const config = source.current()
      return { version: config.version, file: source.file, config: redactConfig(config.raw) }
    })
    app.post('/v1/config/reload', async (request, reply) => {
      const result = await source.reload()
      if (result.ok) return { reloaded: result.changed, version: result.version }
      // The file on disk is invalid; the running version stays and says which one it is.
      return sendError(
        request,
        reply,
        new GatewayError('unprocessable', 'The config file is invalid; the running version stays.', {
          details: { runningVersion: result.version, problems: result.problems },
        }),
      )
    })
  }
}
