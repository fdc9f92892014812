/** curl as a mail client with a password: IMAPS LIST and SMTPS submission through sasl-gate. */
import { execFile } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';

/** curl's exit code and output; 0 is success, 67 a refused login. */
export interface CurlResult {
  code: number;
  stdout: string;
  stderr: string;
}

function curl(cafile: string, args: string[]): Promise<CurlResult> {
  return new Promise((resolve) => {
    execFile('curl', ['-sS', '--max-time', '20', '--cacert', cafile, ...args], (err, stdout, stderr) => {
      const code = err ? (typeof err.code === 'number' ? err.code : -1) : 0;
      resolve({ code, stdout, stderr });
    });
  });
}

/** Lists the user's folders over IMAPS with `AUTH=PLAIN`, as a mail app with a saved password does. */
export function curlImapList(options: { port: number; cafile: string; user: string; password: string }): Promise<CurlResult> {
  const { port, cafile, user, password } = options;
  return curl(cafile, ['--login-options', 'AUTH=PLAIN', '--user', `${user}:${password}`, `imaps://localhost:${port}/`]);
}

/** Sends one message over SMTPS with `AUTH=PLAIN` from `user` to `to`; the message file goes in `dir`. */
export function curlSmtpSend(options: { port: number; cafile: string; user: string; password: string; to: string; subject: string; dir: string }): Promise<CurlResult> {
  const { port, cafile, user, password, to, subject, dir } = options;
  const file = join(dir, `${subject.replace(/[^A-Za-z0-9-]/g, '_')}.eml`);
  writeFileSync(file, `From: ${user}\r\nTo: ${to}\r\nSubject: ${subject}\r\n\r\nsent with a password\r\n`);
  return curl(cafile, ['--login-options', 'AUTH=PLAIN', '--user', `${user}:${password}`, '--mail-from', user, '--mail-rcpt', to, '-T', file, `smtps://localhost:${port}/`]);
}
