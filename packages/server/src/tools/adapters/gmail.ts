/**
 * Gmail (https://developers.google.com/workspace/gmail/api/reference/rest): `send` builds the
 * RFC 5322 message itself and posts it base64url-encoded to `users.messages.send`; `profile` reads
 * `users.getProfile`. Both for the mailbox of the OAuth access token in the secret store
 * (`Authorization: Bearer`), addressed as `me`.
 */
import { Type } from 'typebox'
import type { ToolCallContext, ToolDefinition } from '../types.ts'
import { expectJson } from '../upstream-answer.ts'
import { buildMessage, type MessageFields, messageProblems } from './gmail-message.ts'

// Line breaks are refused by the schema already; the message builder checks again.
const noLineBreak = '^[^\\r\\n]*$'
const Address = Type.String({ minLength: 3, maxLength: 320, pattern: noLineBreak })
const Recipients = Type.Union(
  [
    Type.String({ minLength: 3, maxLength: 8192, pattern: noLineBreak }),
    Type.Array(Address, { minItems: 1, maxItems: 100 }),
  ],
  { description: 'name@example.com, Name <name@example.com>, a comma-separated list, or an array of them' },
)

const SendParams = Type.Object(
  {
    to: Recipients,
    subject: Type.String({ maxLength: 900, pattern: noLineBreak, description: 'one line; any language' }),
    text: Type.String({ maxLength: 5 * 1024 * 1024, description: 'the plain-text body' }),
    cc: Type.Optional(Recipients),
    bcc: Type.Optional(Recipients),
  },
  { additionalProperties: false },
)

const ProfileParams = Type.Object({}, { additionalProperties: false })

function authorization(call: ToolCallContext<unknown>): Record<string, string> {
  return { authorization: `Bearer ${call.secret ?? ''}` }
}

export const gmail: ToolDefinition = {
  name: 'gmail',
  description: 'Send mail from, and read the profile of, the Gmail mailbox the gateway holds a token for.',
  defaultUrl: 'https://gmail.googleapis.com',
  defaultSecret: 'gmail_token',
  actions: {
    send: {
      description: 'Send a plain-text e-mail; answers {id, threadId, labelIds}.',
      params: SendParams,
      // A repeated send is a second e-mail.
      idempotent: false,
      validate: (params) => messageProblems(params as MessageFields),
      async execute(call) {
        const raw = Buffer.from(buildMessage(call.params as MessageFields)).toString('base64url')
        const answer = await call.upstream({
          method: 'POST',
          path: '/gmail/v1/users/me/messages/send',
          headers: { ...authorization(call), 'content-type': 'application/json' },
          body: JSON.stringify({ raw }),
        })
        return { data: expectJson('gmail', answer), upstreamStatus: answer.status }
      },
    },
    profile: {
      description: "The mailbox's address and message counts.",
      params: ProfileParams,
      idempotent: true,
      async execute(call) {
        const answer = await call.upstream({
          method: 'GET',
          path: '/gmail/v1/users/me/profile',
          headers: authorization(call),
        })
        return { data: expectJson('gmail', answer), upstreamStatus: answer.status }
      },
    },
  },
}
