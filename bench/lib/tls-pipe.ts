/**
 * The smallest TLS relay Node can be: `tls.createServer`, and for each connection a TCP
 * connection to the backend piped both ways (`a.pipe(b); b.pipe(a)`), nothing else: no protocol,
 * no logging, no limits. Run as its own process, it shows what one relayed TLS connection costs
 * in Node itself (OpenSSL, the two sockets, stream state) — the floor under any Node proxy.
 */
import { spawn } from 'node:child_process';
import { fileLimitFor, onCleanup, processRss, sleep } from './common.js';
import { scratchDir } from './stack.js';

const SERVER = String.raw`
const tls = require('node:tls');
const net = require('node:net');
const fs = require('node:fs');
const server = tls.createServer({ cert: fs.readFileSync(process.env.CERT), key: fs.readFileSync(process.env.KEY) }, (client) => {
  const backend = net.connect({ host: process.env.BACKEND_HOST, port: Number(process.env.BACKEND_PORT) });
  const end = () => { client.destroy(); backend.destroy(); };
  client.on('error', end);
  backend.on('error', end);
  client.on('close', end);
  backend.on('close', end);
  client.pipe(backend);
  backend.pipe(client);
});
server.listen(0, '127.0.0.1', () => process.send({ port: server.address().port }));
process.on('disconnect', () => process.exit(0));
`;

export interface TlsPipe {
  port: number;
  pid: number;
  /** Its working directory (where `--heapsnapshot-signal` snapshots land). */
  dir: string;
  rss(): number;
  stop(): Promise<void>;
}

export async function startTlsPipe(opts: {
  cert: { certPath: string; keyPath: string };
  backend: { host: string; port: number };
  fileLimit: number;
  nodeOptions?: string[];
}): Promise<TlsPipe> {
  const dir = scratchDir('tls-pipe');
  const env = {
    ...process.env,
    NODE_OPTIONS: '',
    CERT: opts.cert.certPath,
    KEY: opts.cert.keyPath,
    BACKEND_HOST: opts.backend.host,
    BACKEND_PORT: String(opts.backend.port),
  };
  const child = spawn('/bin/sh', ['-c', `ulimit -n ${fileLimitFor(opts.fileLimit)} && exec "$@"`, 'sh', process.execPath, ...(opts.nodeOptions ?? []), '-e', SERVER], {
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    env,
    cwd: dir,
  });
  let exited = false;
  const exit = new Promise<void>((resolve) => child.once('exit', () => ((exited = true), resolve())));
  const stop = async () => {
    if (exited) return;
    if (child.connected) child.disconnect();
    child.kill();
    await Promise.race([exit, sleep(5000)]);
  };
  onCleanup(stop);
  const port = await new Promise<number>((resolve, reject) => {
    child.once('message', (m: { port: number }) => resolve(m.port));
    child.once('exit', (code) => reject(new Error(`TLS pipe exited (${code})`)));
  });
  const pid = child.pid!;
  return { port, pid, dir, rss: () => processRss(pid), stop };
}
