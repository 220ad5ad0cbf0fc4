/** SerpAPI (https://serpapi.com/search-api): `GET /search.json`, the key as the `api_key` parameter. */
import { Type } from 'typebox'
import type { ToolDefinition } from '../types.ts'
import { expectJson } from '../upstream-answer.ts'

const SearchParams = Type.Object(
  {
    q: Type.String({ minLength: 1, maxLength: 2048, description: 'the search query' }),
    num: Type.Optional(Type.Integer({ minimum: 1, maximum: 100, description: 'results per page' })),
    engine: Type.Optional(
      Type.String({ pattern: '^[a-z_]{1,32}$', description: 'search engine (default google)' }),
    ),
    location: Type.Optional(Type.String({ maxLength: 256, description: 'where the search originates' })),
  },
  { additionalProperties: false },
)

export const serpapi: ToolDefinition = {
  name: 'serpapi',
  description: 'Web search through SerpAPI.',
  defaultUrl: 'https://serpapi.com',
  defaultSecret: 'serpapi_key',
  actions: {
    search: {
      description: 'Search the web; answers SerpAPI JSON (organic_results, ...).',
      params: SearchParams,
      idempotent: true,
      async execute(call) {
        const p = call.params as { q: string; num?: number; engine?: string; location?: string }
        const query = new URLSearchParams({ engine: p.engine ?? 'google', q: p.q })
        if (p.num !== undefined) query.set('num', String(p.num))
        if (p.location !== undefined) query.set('location', p.location)
        query.set('api_key', call.secret ?? '')
        const answer = await call.upstream({ method: 'GET', path: `/search.json?${query}` })
        return { data: expectJson('serpapi', answer), upstreamStatus: answer.status }
      },
    },
  },
}
