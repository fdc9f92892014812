/**
 * Drives Python's poplib (the POP3 client of the Python standard library) against sasl-gate: a
 * list of steps in, what each step answered out. Secrets go through the environment, never argv.
 */
import { execFile } from 'node:child_process';

/** One step: a poplib call, or a raw command line (`AUTH ...`, the dummy reply) sent as is. */
export type PoplibStep =
  | { op: 'user' | 'pass_'; arg: string }
  | { op: 'raw'; arg: string }
  | { op: 'stat' | 'list' | 'uidl' | 'quit' | 'capa' | 'stls' }
  | { op: 'retr'; arg: number };

/** What a step answered: the reply (and body lines), or the -ERR poplib raised. */
export interface PoplibResult {
  ok: boolean;
  reply: string;
  lines?: string[];
}

const SCRIPT = String.raw`
import json, os, poplib, socket, ssl, sys
cfg = json.loads(os.environ['POPLIB_STEPS'])
ctx = ssl.create_default_context(cafile=cfg['cafile'])
ctx.check_hostname = False
if cfg.get('source'):
    # poplib has no source address of its own: connect from the one the test names.
    poplib.POP3._create_socket = lambda self, timeout: socket.create_connection((self.host, self.port), timeout, source_address=(cfg['source'], 0))
if cfg['tls'] == 'implicit':
    p = poplib.POP3_SSL('127.0.0.1', cfg['port'], context=ctx, timeout=20)
else:
    p = poplib.POP3('127.0.0.1', cfg['port'], timeout=20)
out = [{'ok': True, 'reply': p.getwelcome().decode()}]
for step in cfg['steps']:
    op = step['op']
    try:
        if op == 'raw':
            r = p._shortcmd(step['arg']); out.append({'ok': True, 'reply': r.decode()})
        elif op in ('user', 'pass_'):
            r = getattr(p, op)(step['arg']); out.append({'ok': True, 'reply': r.decode()})
        elif op == 'stls':
            r = p.stls(ctx); out.append({'ok': True, 'reply': r.decode()})
        elif op == 'stat':
            n, size = p.stat(); out.append({'ok': True, 'reply': '%d %d' % (n, size)})
        elif op == 'capa':
            caps = p.capa(); out.append({'ok': True, 'reply': '', 'lines': [' '.join([k] + v) for k, v in caps.items()]})
        elif op in ('list', 'uidl'):
            r, lines, _ = getattr(p, op)(); out.append({'ok': True, 'reply': r.decode(), 'lines': [l.decode() for l in lines]})
        elif op == 'retr':
            r, lines, _ = p.retr(step['arg']); out.append({'ok': True, 'reply': r.decode(), 'lines': [l.decode('utf-8', 'replace') for l in lines]})
        elif op == 'quit':
            r = p.quit(); out.append({'ok': True, 'reply': r.decode()})
    except poplib.error_proto as e:
        out.append({'ok': False, 'reply': e.args[0].decode() if isinstance(e.args[0], bytes) else str(e.args[0])})
print(json.dumps(out))
`;

/** Runs the steps on one connection; the first result is the greeting. */
export function poplib(options: { port: number; tls: 'implicit' | 'stls'; cafile: string; steps: PoplibStep[]; source?: string }): Promise<PoplibResult[]> {
  const config = JSON.stringify({ port: options.port, tls: options.tls, cafile: options.cafile, steps: options.steps, source: options.source });
  return new Promise((resolve, reject) => {
    execFile('python3', ['-c', SCRIPT], { env: { ...process.env, POPLIB_STEPS: config }, timeout: 60_000 }, (err, stdout, stderr) => {
      if (err) return reject(new Error(`poplib failed: ${stderr || err.message}`));
      resolve(JSON.parse(stdout) as PoplibResult[]);
    });
  });
}
