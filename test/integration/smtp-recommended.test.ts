/**
 * The recommended SMTP set-up, end to end with real Postfix: `backends.smtp.login: master` (AUTH
 * PLAIN with authzid = user through Postfix's Dovecot SASL) into a submission service that expects
 * a PROXY v2 header (`smtpd_upstream_proxy_protocol = haproxy`), with sasl-gate in no
 * `smtpd_authorized_xclient_hosts`. A token user logs in and sends two messages on one connection;
 * Postfix logs the client's own address and port, and no XCLIENT can make the client anyone else.
 */
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect as netConnect } from 'node:net';
import { Writable } from 'node:stream';
import { connect } from 'node:tls';
import { stringify } from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config/load.js';
import { startPostfix, type PostfixInstance } from '../../tools/postfix.js';
import { createLogger } from '../../src/observe/logger.js';
import { startGate, type RunningGate } from '../../src/gate.js';
import { keepLog, secret } from '../support/evidence.js';
import { dataBlock, RawSmtp } from '../support/smtp-raw.js';
import { MASTER, startStack, USERS, xoauth2, type Stack } from '../support/stack.js';

const [ALICE, BOB] = USERS as [(typeof USERS)[0], (typeof USERS)[0]];
/** Any 127.x address reaches loopback: the client's own address, unlike sasl-gate's 127.0.0.1. */
const CLIENT_ADDRESS = '127.0.0.9';

let stack: Stack;
let postfix: PostfixInstance;
let gate: RunningGate;
let smtpPort: number;
let rawLog = '';

beforeAll(async () => {
  stack = await startStack();
  postfix = await startPostfix({ dovecot: stack.dovecot, domain: 'example.test', xclientHosts: [], proxyProtocol: true });
  const yaml = {
    listeners: [{ protocol: 'smtp', bind: '127.0.0.1:0', tls: 'implicit' }],
    tls: stack.tlsPaths,
    backends: {
      imap: { host: stack.dovecot.host, port: stack.dovecot.imapPort },
      smtp: { host: postfix.host, port: postfix.proxySubmissionPort!, login: 'master', proxyProtocol: true },
    },
    master: MASTER,
    oauth: {
      issuer: stack.idp.issuer,
      audience: ['mail'],
      validation: ['jwt'],
      clientId: stack.idp.clientId,
      clientSecret: stack.idp.clientSecret,
    },
  };
  const path = join(mkdtempSync(join(tmpdir(), 'sasl-gate-recommended-')), 'sasl-gate.yaml');
  writeFileSync(path, stringify(yaml));
  const { config } = loadConfig({ file: path, env: {} });
  const sink = new Writable({
    write(chunk: Buffer, _encoding, callback) {
      rawLog += chunk.toString('utf8');
      callback();
    },
  });
  gate = await startGate(config, { log: createLogger({ level: 'debug', destination: sink }) });
  smtpPort = gate.listeners.find((l) => l.protocol === 'smtp')!.port;
});

afterAll(async () => {
  keepLog(rawLog, 'smtp-recommended');
  await gate?.close(0);
  await Promise.all([postfix?.stop(), stack?.close()]);
});

/** A raw SMTPS connection to sasl-gate from CLIENT_ADDRESS. */
async function smtps(): Promise<RawSmtp> {
  const tcp = netConnect({ host: '127.0.0.1', port: smtpPort, localAddress: CLIENT_ADDRESS });
  const socket = connect({ socket: tcp, ca: stack.ca, servername: 'localhost' });
  await new Promise<void>((resolve, reject) => {
    socket.once('secureConnect', resolve);
    socket.once('error', reject);
  });
  return RawSmtp.over(socket, 10_000);
}

describe('master login with PROXY v2, sasl-gate not trusted with XCLIENT', () => {
  it('a token user sends two messages on one connection and Postfix logs the client, not sasl-gate', async () => {
    const token = secret(await stack.idp.mintAccessToken({ user: ALICE.name }), 'access token');
    const c = await smtps();
    try {
      const ehlo = await c.command('EHLO client.example');
      expect(ehlo.code).toBe(250);
      expect(ehlo.lines.join('\n')).not.toMatch(/XCLIENT/);
      expect((await c.command(`AUTH XOAUTH2 ${xoauth2(ALICE.name, token)}`)).lines).toEqual(['235 2.7.0 Authentication successful']);
      const ids: string[] = [];
      for (const n of [1, 2]) {
        expect((await c.command(`MAIL FROM:<${ALICE.name}>`)).code).toBe(250);
        expect((await c.command(`RCPT TO:<${BOB.name}>`)).code).toBe(250);
        expect((await c.command('DATA')).code).toBe(354);
        c.write(dataBlock(`From: ${ALICE.name}\r\nTo: ${BOB.name}\r\nSubject: recommended ${n}\r\n\r\nmessage ${n}\r\n`));
        const done = await c.readReply();
        expect(done.code, done.text).toBe(250);
        ids.push(/queued as ([0-9A-F]+)/.exec(done.text)![1]!);
      }
      // Postfix would refuse it anyway (sasl-gate is not trusted with XCLIENT): it is answered, never obeyed.
      const xclient = await c.command(`XCLIENT LOGIN=${BOB.name}`);
      expect(xclient.code).toBeGreaterThanOrEqual(500);
      expect((await c.command('NOOP')).code).toBe(250);
      expect((await c.command('QUIT')).code).toBe(221);

      const log = await postfix.readLog();
      for (const id of ids) {
        expect(log).toMatch(
          new RegExp(`${id}: client=[^\\s\\[]+\\[127\\.0\\.0\\.9\\]:${c.localPort}, sasl_method=PLAIN, sasl_username=alice@example\\.test\\n`),
        );
      }
      expect(log).not.toMatch(/sasl_username=(?!alice@example\.test)/);
      expect(log).toMatch(new RegExp(`smtpd\\[\\d+\\]: connect from [^\\s\\[]+\\[127\\.0\\.0\\.9\\]:${c.localPort}\\n`));
    } finally {
      c.close();
    }
  });
});
