import net from 'node:net';

/**
 * A TCP proxy that holds every chunk `delayMs` before passing it on, both ways, in order: a server
 * as far away as a real network would put it (a Temporal cluster in another data centre), so a
 * round trip through it takes at least twice the delay whatever the load of the machine.
 */
export interface LatencyProxy {
  /** `127.0.0.1:<port>`, to connect to instead of the server. */
  address: string;
  close(): Promise<void>;
}

export async function startLatencyProxy(upstream: string, delayMs: number): Promise<LatencyProxy> {
  const [host, port] = [
    upstream.slice(0, upstream.lastIndexOf(':')),
    Number(upstream.slice(upstream.lastIndexOf(':') + 1)),
  ];
  const sockets = new Set<net.Socket>();
  /** The same delay for every chunk: the timers fire in the order they were set. */
  const delayed = (from: net.Socket, to: net.Socket) => {
    from.on('data', (chunk) => setTimeout(() => to.destroyed || to.write(chunk), delayMs));
    from.on('end', () => setTimeout(() => to.end(), delayMs));
  };
  const server = net.createServer((client) => {
    const server = net.connect(port, host === 'localhost' ? '127.0.0.1' : host);
    for (const s of [client, server]) {
      sockets.add(s);
      s.on('close', () => {
        sockets.delete(s);
        client.destroy();
        server.destroy();
      });
      s.on('error', () => undefined);
    }
    delayed(client, server);
    delayed(server, client);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    address: `127.0.0.1:${(server.address() as net.AddressInfo).port}`,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}
