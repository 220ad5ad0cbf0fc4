/**
 * All three fake upstreams at once, for the demo (`npm start`) and for end-to-end tests: each on
 * its own free port, each expecting its own credential.
 */
import type { FakeServer } from './fake-server.ts'
import { type FakeGmail, startFakeGmail } from './gmail.ts'
import { startFakeOpenAI } from './openai.ts'
import { startFakeSerpApi } from './serpapi.ts'

export type { FakeServer, Fault, FaultOptions, FaultQueue, RecordedRequest } from './fake-server.ts'
export type { FakeGmail, SentMessage } from './gmail.ts'

export interface FakeUpstreamsOptions {
  /** The credential each fake expects: SerpAPI's key, OpenAI's key, Gmail's access token. */
  credentials: { serpapi: string; openai: string; gmail: string }
  host?: string
}

export interface FakeUpstreams {
  readonly serpapi: FakeServer
  readonly openai: FakeServer
  readonly gmail: FakeGmail
  /** Close all three. */
  close(): Promise<void>
}

/** Start the SerpAPI, OpenAI and Gmail fakes; if one fails to start, the others are closed again. */
export async function startFakeUpstreams(options: FakeUpstreamsOptions): Promise<FakeUpstreams> {
  const { credentials, host } = options
  const started = await Promise.allSettled([
    startFakeSerpApi({ apiKey: credentials.serpapi, host }),
    startFakeOpenAI({ apiKey: credentials.openai, host }),
    startFakeGmail({ accessToken: credentials.gmail, host }),
  ] as const)
  const failed = started.find((s) => s.status === 'rejected')
  if (failed !== undefined) {
    await Promise.all(started.map((s) => (s.status === 'fulfilled' ? s.value.close() : undefined)))
    throw failed.reason
  }
  const [serpapi, openai, gmail] = started.map((s) => (s as PromiseFulfilledResult<FakeServer>).value) as [
    FakeServer,
    FakeServer,
    FakeGmail,
  ]
  return {
    serpapi,
    openai,
    gmail,
    close: async () => {
      await Promise.all([serpapi.close(), openai.close(), gmail.close()])
    },
  }
}
