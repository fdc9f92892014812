/**
 * Secrets given either as a value or as a file (`master.password` / `master.passwordFile`,
 * `admin.metricsToken` / `admin.metricsTokenFile`, the directory sources' tokens). Every one is read
 * by the one rule below, so a file that works for one key works for all.
 */
import { readFileSync } from 'node:fs';
import { ConfigError } from '../errors.js';
import { readFailure } from './problems.js';

/**
 * The rule: the file is read once, as UTF-8, and exactly one line end at its very end (`\n` or
 * `\r\n`, as `echo` and editors write it) is dropped. Nothing else is trimmed: spaces, tabs or a
 * second newline are part of the secret. What remains must not be empty.
 */
export function secretFromFileText(text: string): string {
  return text.replace(/\r?\n$/, '');
}

/** What a secret must be beyond not empty. */
export interface SecretOptions {
  /** The fewest characters it may have. */
  minLength?: number;
  /** What it is called in messages: `token`, `password`; `secret` by default. */
  what?: string;
}

/**
 * Reads a secret file by the rule of secretFromFileText; throws a ConfigError naming `fileKey`
 * (`master.passwordFile`) when the file cannot be read, is empty, or holds fewer than `minLength`
 * characters.
 */
export function readSecretFile(file: string, fileKey: string, options: SecretOptions = {}): string {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new ConfigError(fileKey, `cannot read ${file}: ${readFailure(err)}`);
  }
  const secret = secretFromFileText(text);
  if (secret === '') throw new ConfigError(fileKey, `${file} is empty`);
  const minLength = options.minLength ?? 1;
  if (secret.length < minLength) {
    throw new ConfigError(fileKey, `the ${options.what ?? 'secret'} must be at least ${minLength} characters`);
  }
  return secret;
}

/**
 * The secret of `key` (`directory.authentik.token`): its value when set, else the content of the
 * file `${key}File` names, read by readSecretFile; undefined when neither is set.
 */
export function readSecret(
  value: string | undefined,
  file: string | undefined,
  key: string,
  options: SecretOptions = {},
): string | undefined {
  if (value !== undefined && value !== '') return value;
  if (file === undefined) return undefined;
  return readSecretFile(file, `${key}File`, options);
}
