/**
 * An IMAP "backend" that answers at once, in its own Node process: greeting with capabilities,
 * `ID`, `AUTHENTICATE PLAIN` (any credentials: the master login sasl-gate sends), `CAPABILITY`,
 * `NOOP`, `LOGOUT`. It stands in for Dovecot where the benchmark is about sasl-gate's own cost.
 */
import { spawn } from 'node:child_process';
import { onCleanup, processCpuSeconds } from './common.js';

const SERVER = String.raw`
const net = require('node:net');
const CAPS = 'IMAP4rev1 SASL-IR LITERAL+ ID ENABLE IDLE';
const POST = 'IMAP4rev1 SASL-IR LITERAL+ ID ENABLE IDLE SORT THREAD=REFERENCES MULTIAPPEND UNSELECT CHILDREN NAMESPACE UIDPLUS CONDSTORE MOVE';
let logins = 0;
const server = net.createServer((socket) => {
  socket.setNoDelay(true);
  socket.on('error', () => {});
  socket.write('* OK [CAPABILITY ' + CAPS + ' AUTH=PLAIN] instant backend ready\r\n');
  let buffered = '';
  let authed = false;
  socket.on('data', (chunk) => {
    buffered += chunk.toString('latin1');
    let out = '';
    for (let end = buffered.indexOf('\r\n'); end >= 0; end = buffered.indexOf('\r\n')) {
      const line = buffered.slice(0, end);
      buffered = buffered.slice(end + 2);
      const m = /^(\S+) (\S+)/.exec(line);
      if (!m) { out += '* BAD what?\r\n'; continue; }
      const tag = m[1];
      const cmd = m[2].toUpperCase();
      if (cmd === 'ID') out += '* ID ("name" "instant")\r\n' + tag + ' OK ID completed.\r\n';
      else if (cmd === 'AUTHENTICATE' || cmd === 'LOGIN') { authed = true; logins += 1; out += tag + ' OK [CAPABILITY ' + POST + '] Logged in\r\n'; }
      else if (cmd === 'CAPABILITY') out += '* CAPABILITY ' + (authed ? POST : CAPS + ' AUTH=PLAIN') + '\r\n' + tag + ' OK Capability completed.\r\n';
      else if (cmd === 'NOOP') out += tag + ' OK NOOP completed.\r\n';
      else if (cmd === 'LOGOUT') { socket.end('* BYE Logging out\r\n' + tag + ' OK Logout completed.\r\n'); return; }
      else out += tag + ' BAD Unknown command\r\n';
    }
    if (out) socket.write(out);
  });
});
server.listen(0, '127.0.0.1', () => process.send({ port: server.address().port }));
process.on('message', (m) => { if (m === 'count') process.send({ logins }); });
process.on('disconnect', () => process.exit(0));
`;

export interface InstantBackend {
  host: string;
  port: number;
  pid: number;
  cpuSeconds(): number;
  logins(): Promise<number>;
  stop(): void;
}

export async function startInstantBackend(): Promise<InstantBackend> {
  const child = spawn(process.execPath, ['-e', SERVER], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'], env: { ...process.env, NODE_OPTIONS: '' } });
  const stop = () => {
    if (child.connected) child.disconnect();
    child.kill();
  };
  onCleanup(stop);
  const port = await new Promise<number>((resolve, reject) => {
    child.once('message', (m: { port: number }) => resolve(m.port));
    child.once('exit', (code) => reject(new Error(`instant backend exited (${code})`)));
  });
  return {
    host: '127.0.0.1',
    port,
    pid: child.pid!,
    cpuSeconds: () => processCpuSeconds(child.pid!),
    logins: () =>
      new Promise((resolve) => {
        child.once('message', (m: { logins: number }) => resolve(m.logins));
        child.send('count');
      }),
    stop,
  };
}
