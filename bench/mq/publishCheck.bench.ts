/**
 * The publish check (`checkPublish`) runs on every publish, republish and relayed row before
 * amqplib encodes the message. Its cost against the client's whole budget of about 9 µs per
 * message (README): a plain message, and a typed one with two headers.
 * Run: pnpm exec tsx --conditions=@ballast/source bench/mq/publishCheck.bench.ts
 */
import { createRequire } from 'node:module'
import { dirname, join } from 'node:path'
import { checkPublish } from '../../packages/mq/src/internal/encode.js'
import { compare, do_not_optimize } from '../harness.js'

// amqplib's own encoding of the same properties (what the check guards), for scale; read from its
// files, since its exports map closes lib/
const require = createRequire(import.meta.url)
const lib = join(dirname(require.resolve('amqplib')), 'lib')
const defs = require(join(lib, 'defs.js')) as {
  encodeProperties(id: number, channel: number, size: number, props: object): Buffer
  BasicProperties: number
}
const { publish: publishArgs } = require(join(lib, 'api_args.js')) as {
  publish(exchange: string, routingKey: string, options: object): object
}

const plain = {
  persistent: true,
  mandatory: true,
  messageId: '6f1c1f1e-1111-4222-8333-444455556666',
}
const typed = {
  ...plain,
  contentType: 'application/json',
  type: 'order.placed',
  headers: {
    'x-message-version': 1,
    traceparent: '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01',
  },
}

await compare({
  package: 'mq',
  name: 'publish-check',
  title: 'checkPublish per message, against amqplib encoding the same properties',
  cases: [
    {
      name: '@ballast/mq checkPublish, plain message',
      ours: true,
      fn: () => do_not_optimize(checkPublish('orders', 'order.placed', plain)),
    },
    {
      name: '@ballast/mq checkPublish, typed message with 2 headers',
      fn: () => do_not_optimize(checkPublish('orders', 'order.placed', typed)),
    },
    {
      name: 'amqplib encodes the properties, plain message',
      fn: () =>
        do_not_optimize(
          defs.encodeProperties(
            defs.BasicProperties,
            1,
            256,
            publishArgs('orders', 'order.placed', plain),
          ),
        ),
    },
    {
      name: 'amqplib encodes the properties, typed message with 2 headers',
      fn: () =>
        do_not_optimize(
          defs.encodeProperties(
            defs.BasicProperties,
            1,
            256,
            publishArgs('orders', 'order.placed', typed),
          ),
        ),
    },
  ],
  notes: [
    'Before this review: 300-400 ns (plain) and 1.3-1.9 µs (2 headers) per check, a keyed read per property and a path string per header.',
  ],
})
