/** Configuration files for the loader tests: a minimal valid configuration, written to a temporary file. */
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const dir = mkdtempSync(join(tmpdir(), 'sasl-gate-config-'));

/** Writes `text` to a new YAML file and returns its path. */
export function configFile(text: string): string {
  const path = join(dir, `c${Math.random().toString(36).slice(2)}.yaml`);
  writeFileSync(path, text);
  return path;
}

/** The smallest configuration that loads: one IMAP listener, a development certificate, a provider. */
export const MINIMAL_CONFIG = `
listeners: [{ protocol: imap, bind: "127.0.0.1:993" }]
tls: { development: true }
backends: { imap: { host: 127.0.0.1 } }
master: { user: sasl-gate, password: pw }
oauth: { issuer: https://idp.example.com, audience: [mail] }
`;
