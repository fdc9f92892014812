/**
 * `sasl-gate demo`: a working local setup in one command. A private Dovecot, a development
 * OpenID provider and sasl-gate in front, a welcome message in alice's mailbox, and commands to
 * paste that read it through the proxy with an OAuth token.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { join, resolve } from 'node:path';
import { pino } from 'pino';
import { stringify } from 'yaml';
import { loadConfig } from '../config/load.js';
import { createLogger } from '../observe/logger.js';
import { ensureDevCertificate } from '../server/devcert.js';
import { startGate } from '../server/gate.js';
import { ensureDovecotInstalled, startDovecot } from './dovecot.js';
import { ensurePostfixInstalled, startPostfix } from './postfix.js';
import { devGrantType, startDevIdp } from './idp.js';
import { freePort } from './ports.js';

const USERS = [
  { name: 'alice@example.test', password: 'alice-demo-password' },
  { name: 'bob@example.test', password: 'bob-demo-password' },
];

/** Delivers one message over LMTP, as Postfix would. */
async function deliver(host: string, port: number, to: string, message: string): Promise<void> {
  const socket = connect({ host, port });
  let buffer = '';
  const replies: string[] = [];
  let wake: (() => void) | undefined;
  socket.on('data', (chunk: Buffer) => {
    buffer += chunk.toString('utf8');
    let end: number;
    while ((end = buffer.indexOf('\r\n')) >= 0) {
      const line = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      if (/^\d{3} /.test(line)) replies.push(line);
      wake?.();
    }
  });
  const reply = async (): Promise<string> => {
    while (replies.length === 0) await new Promise<void>((r) => (wake = r));
    const line = replies.shift()!;
    if (!/^[23]/.test(line)) throw new Error(`LMTP delivery failed: ${line}`);
    return line;
  };
  await new Promise<void>((r, j) => socket.once('connect', r).once('error', j));
  await reply();
  for (const command of ['LHLO demo.local', 'MAIL FROM:<demo@example.test>', `RCPT TO:<${to}>`, 'DATA']) {
    socket.write(`${command}\r\n`);
    await reply();
  }
  socket.write(`${message.replace(/\r?\n/g, '\r\n')}\r\n.\r\n`);
  await reply();
  socket.end('QUIT\r\n');
}

async function portOr(preferred: number): Promise<number> {
  const free = await new Promise<boolean>((resolvePort) => {
    const probe = connect({ host: '127.0.0.1', port: preferred });
    probe.once('connect', () => {
      probe.destroy();
      resolvePort(false);
    });
    probe.once('error', () => resolvePort(true));
  });
  return free ? preferred : freePort();
}

/** Runs the demo until interrupted; resolves with the exit code. */
export async function runDemo(): Promise<number> {
  const say = (text: string) => process.stdout.write(`${text}\n`);
  const work = resolve('.demo');
  mkdirSync(work, { recursive: true });
  say('sasl-gate demo: starting Dovecot, Postfix, a development OpenID provider and sasl-gate ...');
  await ensureDovecotInstalled();
  await ensurePostfixInstalled();
  const master = { user: 'sasl-gate', password: `demo-master-${process.pid}-${Date.now()}` };
  const [dovecot, idp] = await Promise.all([
    startDovecot({ users: USERS, master }),
    startDevIdp({ users: USERS.map((u) => ({ id: u.name.split('@')[0]!, email: u.name })), audience: 'mail' }),
  ]);
  const postfix = await startPostfix({ dovecot, domain: 'example.test' });
  const certs = await ensureDevCertificate(resolve('certs'));
  const imapPort = await portOr(1993);
  const smtpPort = await portOr(1465);
  const configPath = join(work, 'sasl-gate.yaml');
  writeFileSync(
    configPath,
    stringify({
      listeners: [
        { protocol: 'imap', bind: `127.0.0.1:${imapPort}`, tls: 'implicit' },
        { protocol: 'smtp', bind: `127.0.0.1:${smtpPort}`, tls: 'implicit' },
      ],
      tls: { cert: certs.certPath, key: certs.keyPath },
      backends: {
        imap: { host: dovecot.host, port: dovecot.imapPort },
        smtp: { host: postfix.host, port: postfix.submissionPort, login: 'xclient' },
      },
      master,
      oauth: {
        issuer: idp.issuer,
        audience: ['mail'],
        validation: ['jwt'],
        clientId: idp.clientId,
        clientSecret: idp.clientSecret,
        allowedEmailDomains: ['example.test'],
      },
      admin: { bind: `127.0.0.1:${await portOr(9090)}` },
    }),
    { mode: 0o600 },
  );
  const { config } = loadConfig({ file: configPath, env: {} });
  const logPath = join(work, 'sasl-gate.log');
  const log = createLogger({ level: 'debug', destination: pino.destination({ dest: logPath, sync: false }) });
  const gate = await startGate(config, { log });

  await deliver(
    dovecot.host,
    dovecot.lmtpPort,
    USERS[0]!.name,
    `From: demo@example.test\nTo: ${USERS[0]!.name}\nSubject: Welcome to sasl-gate\nDate: ${new Date().toUTCString()}\n\nThis message was read through sasl-gate with an OAuth access token.\n`,
  );
  const token = await idp.mintAccessToken({ user: USERS[0]!.name });
  const cacert = certs.caPath;
  const url = `imaps://localhost:${imapPort}`;
  const alice = USERS[0]!.name;
  say(`
Ready.
  sasl-gate IMAPS   ${url}          (config ${configPath}, log ${logPath})
  sasl-gate SMTPS   smtps://localhost:${smtpPort}
  OpenID provider   ${idp.issuer}
  Dovecot           127.0.0.1:${dovecot.imapPort} (private instance, log ${dovecot.logPath})
  Postfix           127.0.0.1:${postfix.submissionPort} (private instance, log ${postfix.logPath})
  users             ${USERS.map((u) => `${u.name} / ${u.password}`).join(', ')}

List alice's INBOX with an OAuth token (OAUTHBEARER, valid for an hour):

  curl --cacert ${cacert} --user ${USERS[0]!.name} --oauth2-bearer '${token}' '${url}/INBOX?ALL'

Read the welcome message:

  curl --cacert ${cacert} --user ${USERS[0]!.name} --oauth2-bearer '${token}' '${url}/INBOX;MAILINDEX=1'

Send alice a message through sasl-gate's SMTPS with the same token (Postfix sees her as the sender):

  printf 'From: ${alice}\\r\\nTo: ${alice}\\r\\nSubject: Sent with an OAuth token\\r\\n\\r\\nHello from sasl-gate.\\r\\n' | curl -sS --cacert ${cacert} --user ${alice} --oauth2-bearer '${token}' --mail-from ${alice} --mail-rcpt ${alice} -T - smtps://localhost:${smtpPort}

then run the first command again: the INBOX now has two messages.

A password client passes through to Dovecot unchanged:

  curl --cacert ${cacert} --user '${USERS[1]!.name}:${USERS[1]!.password}' '${url}/'

A fresh token for any user, from the development provider's token endpoint:

  curl -s -u '${idp.clientId}:${idp.clientSecret}' -d grant_type=${devGrantType} -d username=bob@example.test ${idp.tokenEndpoint}

Press Ctrl+C to stop.`);

  await new Promise<void>((done) => {
    process.once('SIGINT', done);
    process.once('SIGTERM', done);
  });
  say('stopping ...');
  await gate.close();
  await Promise.all([dovecot.stop(), idp.close(), postfix.stop()]);
  log.flush();
  return 0;
}
