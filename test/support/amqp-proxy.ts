import net from 'node:net';

/**
 * A TCP proxy in front of RabbitMQ that reads the AMQP 0-9-1 frames a client sends and, once told
 * to, holds back everything from the client's first `basic.ack` on: the broker then never learns
 * that the client acknowledged a message. Used to kill a client between a publish the broker
 * confirmed and the ack of the message it came from, at exactly that point, whatever the load.
 */
export interface AmqpProxy {
  port: number;
  /** Resolves once a client `basic.ack` has been held back (nothing after it is forwarded). */
  ackHeld: Promise<void>;
  /** Cuts every connection (the broker sees the client vanish) and stops listening. */
  close(): Promise<void>;
}

const PROTOCOL_HEADER_BYTES = 8;
const FRAME_METHOD = 1;
const BASIC_CLASS = 60;
const BASIC_ACK = 80;

export async function startAmqpProxy(broker = { host: '127.0.0.1', port: 5672 }): Promise<AmqpProxy> {
  const sockets = new Set<net.Socket>();
  let markHeld!: () => void;
  const ackHeld = new Promise<void>((resolve) => (markHeld = resolve));
  const server = net.createServer((client) => {
    const upstream = net.connect(broker.port, broker.host);
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on('close', () => sockets.delete(s));
      s.on('error', () => undefined);
    }
    upstream.pipe(client);
    let pending = Buffer.alloc(0);
    let headerSeen = false;
    let holding = false;
    client.on('data', (chunk: Buffer) => {
      if (holding) return;
      pending = Buffer.concat([pending, chunk]);
      let forward = 0;
      if (!headerSeen) {
        if (pending.length < PROTOCOL_HEADER_BYTES) return;
        headerSeen = true;
        forward = PROTOCOL_HEADER_BYTES;
      }
      // Frames: type (1), channel (2), payload size (4), payload, frame end (0xCE).
      while (pending.length - forward >= 7) {
        const size = pending.readUInt32BE(forward + 3);
        const end = forward + 7 + size + 1;
        if (pending.length < end) break;
        const type = pending[forward];
        if (type === FRAME_METHOD && size >= 4) {
          const classId = pending.readUInt16BE(forward + 7);
          const methodId = pending.readUInt16BE(forward + 9);
          if (classId === BASIC_CLASS && methodId === BASIC_ACK) {
            holding = true;
            break;
          }
        }
        forward = end;
      }
      if (forward > 0) upstream.write(pending.subarray(0, forward));
      pending = pending.subarray(forward);
      if (holding) markHeld();
    });
    client.on('close', () => upstream.destroy());
    upstream.on('close', () => client.destroy());
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as net.AddressInfo).port,
    ackHeld,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}
