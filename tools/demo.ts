/**
 * `npm run demo`: a working local setup in one command. A private Dovecot, a development
 * OpenID provider and sasl-gate in front, a welcome message in alice's mailbox, and commands to
 * paste that read it through the proxy with an OAuth token.
 */
import { fileURLToPath } from 'node:url';
import { mkdirSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { join, resolve } from 'node:path';
import { pino } from 'pino';
import { stringify } from 'yaml';
import { loadConfig } from '../src/config/load.js';
import { createLogger } from '../src/observe/logger.js';
import { ensureDevCertificate } from '../src/tls/devcert.js';
import { startGate } from '../src/gate.js';
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

/** A single-quoted shell word. */
function shellQuote(value: string): string {
  return `'${value.replace(/'/g, `'\\''`)}'`;
}

/** Runs the demo until interrupted; resolves with the exit code. */
async function runDemo(): Promise<number> {
  const say = (text: string) => process.stdout.write(`${text}\n`);
  // Ctrl+C at any moment, during start-up too, stops what has been started so far, newest first.
  const started: Array<() => Promise<unknown>> = [];
  let interrupted = false;
  let wakeStop: () => void = () => undefined;
  const stopRequested = new Promise<void>((resolveStop) => (wakeStop = resolveStop));
  const onSignal = () => {
    interrupted = true;
    wakeStop();
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  const stopAll = async () => {
    for (const stop of started.reverse()) await stop().catch((err: Error) => say(`while stopping: ${err.message}`));
  };
  try {
    const ready = await startDemo(say, started, () => interrupted);
    if (ready) {
      say('Press Ctrl+C to stop.');
      await stopRequested;
    }
    say('stopping ...');
  } finally {
    await stopAll();
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
  say('stopped.');
  return 0;
}

/** Starts every part (each one's stop recorded in `started`) and prints how to use them; false when interrupted first. */
async function startDemo(say: (text: string) => void, started: Array<() => Promise<unknown>>, interrupted: () => boolean): Promise<boolean> {
  const work = resolve('.demo');
  mkdirSync(work, { recursive: true });
  say('sasl-gate demo: starting Dovecot, Postfix, a development OpenID provider and sasl-gate ...');
  await ensureDovecotInstalled();
  await ensurePostfixInstalled();
  if (interrupted()) return false;
  const master = { user: 'sasl-gate', password: `demo-master-${process.pid}-${Date.now()}` };
  // The self-service page's address is registered with the provider before either starts.
  const portalPort = await portOr(8443);
  const portalUrl = `https://localhost:${portalPort}`;
  const starting = [
    startDovecot({ users: USERS, master }),
    startDevIdp({
      users: USERS.map((u) => ({ id: u.name.split('@')[0]!, email: u.name })),
      audience: 'mail',
      webClient: { clientId: 'mail-portal', redirectUris: [`${portalUrl}/callback`] },
    }),
  ] as const;
  // Whichever started is stopped again, even when the other failed.
  const [dovecotResult, idpResult] = await Promise.allSettled(starting);
  if (dovecotResult.status === 'fulfilled') started.push(() => dovecotResult.value.stop());
  if (idpResult.status === 'fulfilled') started.push(() => idpResult.value.close());
  if (dovecotResult.status === 'rejected') throw dovecotResult.reason;
  if (idpResult.status === 'rejected') throw idpResult.reason;
  const dovecot = dovecotResult.value;
  const idp = idpResult.value;
  if (interrupted()) return false;
  const postfix = await startPostfix({ dovecot, domain: 'example.test' });
  started.push(() => postfix.stop());
  if (interrupted()) return false;
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
      storage: { dir: join(work, 'state') },
      appPasswords: { enabled: true },
      portal: {
        bind: `127.0.0.1:${portalPort}`,
        publicUrl: portalUrl,
        clientId: idp.webClient!.clientId,
        clientSecret: idp.webClient!.clientSecret,
        providerName: 'the demo provider',
      },
    }),
    { mode: 0o600 },
  );
  const { config } = loadConfig({ file: configPath, env: {} });
  const logPath = join(work, 'sasl-gate.log');
  const log = createLogger({ level: 'debug', destination: pino.destination({ dest: logPath, sync: false }) });
  const gate = await startGate(config, { log });
  started.push(async () => {
    await gate.close(0);
    log.flush();
  });
  if (interrupted()) return false;

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
  const admin = gate.admin ? `http://${gate.admin.host}:${gate.admin.port}` : undefined;
  const portal = gate.portal
    ? `\n  app passwords     ${portalUrl}/   (sign in as alice, any password; the browser will warn about the development certificate)`
    : '';
  const cli = `node ${shellQuote(fileURLToPath(new URL('../bin/sasl-gate.js', import.meta.url)))}`;
  const appPasswordHelp = gate.appPasswords
    ? `
A client without OAuth uses an app password (made here on the command line; users make theirs on
the page above). Dovecot knows no such password: sasl-gate logs alice in with the master user.

  export APP_PASSWORD=$(${cli} app-passwords create --config ${configPath} --user ${alice} --label demo-$$ | tail -1)
  curl --cacert ${cacert} --user "${alice}:$APP_PASSWORD" '${url}/'
`
    : '';
  const tokenRequest = `curl -s -u ${shellQuote(`${idp.clientId}:${idp.clientSecret}`)} -d grant_type=${devGrantType} -d username=bob@example.test ${idp.tokenEndpoint}`;
  say(`
Ready.
  sasl-gate IMAPS   ${url}          (config ${configPath}, log ${logPath})
  sasl-gate SMTPS   smtps://localhost:${smtpPort}${admin ? `\n  sasl-gate admin   ${admin}/readyz, ${admin}/metrics` : ''}${portal}
  OpenID provider   ${idp.issuer}
  Dovecot           127.0.0.1:${dovecot.imapPort} (private instance, log ${dovecot.logPath})
  Postfix           127.0.0.1:${postfix.submissionPort} (private instance, log ${postfix.logPath})
  users             ${USERS.map((u) => `${u.name} / ${u.password}`).join(', ')}

In another terminal, take alice's OAuth access token (valid for an hour):

  export TOKEN=${shellQuote(token)}

List her INBOX with it (OAUTHBEARER):

  curl --cacert ${cacert} --user ${alice} --oauth2-bearer "$TOKEN" '${url}/INBOX?ALL'

Read the welcome message:

  curl --cacert ${cacert} --user ${alice} --oauth2-bearer "$TOKEN" '${url}/INBOX;MAILINDEX=1'

Send her a message through sasl-gate's SMTPS with the same token (Postfix sees her as the sender),
then list the INBOX again: it now has two messages.

  printf 'Subject: Sent with an OAuth token\\r\\n\\r\\nHello from sasl-gate.\\r\\n' |
    curl -sS --cacert ${cacert} --user ${alice} --oauth2-bearer "$TOKEN" --mail-from ${alice} --mail-rcpt ${alice} -T - smtps://localhost:${smtpPort}

A password client passes through to Dovecot unchanged:

  curl --cacert ${cacert} --user '${USERS[1]!.name}:${USERS[1]!.password}' '${url}/'
${appPasswordHelp}
A fresh token for any user (here bob), from the development provider's token endpoint:

  export TOKEN=$(${tokenRequest} | node -pe 'JSON.parse(require("fs").readFileSync(0, "utf8")).access_token')
`);
  return !interrupted();
}

// Everything it started is stopped by then; idle keep-alive sockets must not hold the process.
process.exit(await runDemo().catch((err: Error) => {
  process.stderr.write(`demo: ${err.message}\n`);
  return 1;
}));
