import net from 'node:net';
import type { AddressInfo } from 'node:net';

/**
 * A TCP forwarder on 127.0.0.1 in front of a test server, which a test can
 * stop and start again on the same port. Stopped, it refuses connections and
 * has reset the open ones, so clients see the server as down while the
 * server behind it keeps its objects.
 */
export class TcpProxy {
  #port = 0;
  #target: { host: string; port: number };
  #server: net.Server | undefined;
  #sockets = new Set<net.Socket>();

  private constructor(target: { host: string; port: number }) {
    this.#target = target;
  }

  /** Starts a proxy on a free port of 127.0.0.1 that forwards to `target` (a URL such as `http://127.0.0.1:4568`). */
  static async start(target: string): Promise<TcpProxy> {
    const url = new URL(target);
    const proxy = new TcpProxy({ host: url.hostname, port: Number(url.port) });
    await proxy.#listen(0);
    return proxy;
  }

  /** Port the proxy listens on, the same after `resume`. */
  get port(): number {
    return this.#port;
  }

  /** Base URL of the proxy, `http://127.0.0.1:<port>`. */
  get endpoint(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  /** Stops accepting connections and resets every open one. */
  async stop(): Promise<void> {
    const server = this.#server;
    this.#server = undefined;
    for (const socket of this.#sockets) socket.destroy();
    this.#sockets.clear();
    if (server) await new Promise<void>((resolve) => server.close(() => resolve()));
  }

  /** Accepts connections again on the same port. */
  async resume(): Promise<void> {
    if (!this.#server) await this.#listen(this.#port);
  }

  async #listen(port: number): Promise<void> {
    const server = net.createServer((client) => this.#forward(client));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, '127.0.0.1', () => resolve());
    });
    this.#server = server;
    this.#port = (server.address() as AddressInfo).port;
  }

  // Pipes one client connection to a new connection to the target, both ways.
  #forward(client: net.Socket): void {
    const upstream = net.connect(this.#target.port, this.#target.host);
    for (const socket of [client, upstream]) {
      this.#sockets.add(socket);
      socket.on('error', () => undefined);
      socket.on('close', () => {
        this.#sockets.delete(socket);
        client.destroy();
        upstream.destroy();
      });
    }
    client.pipe(upstream);
    upstream.pipe(client);
  }
}
