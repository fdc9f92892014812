/**
 * The LOGIN mechanism: two server prompts, each answered with one base64 line (user, then password).
 */
import { SaslError } from '../errors.js';
import { decodeUtf8Strict } from './base64.js';

/** base64 of "Username:", the first LOGIN challenge. */
export const LOGIN_USERNAME_PROMPT = 'VXNlcm5hbWU6';

/** base64 of "Password:", the second LOGIN challenge. */
export const LOGIN_PASSWORD_PROMPT = 'UGFzc3dvcmQ6';

/** Decodes one LOGIN answer (user name or password): valid UTF-8 without NUL; may be empty. */
export function decodeLoginField(message: Buffer): string {
  const text = decodeUtf8Strict(message);
  // A NUL would let a LOGIN user smuggle PLAIN's field separator into the backend's PLAIN login.
  if (text.includes('\u0000')) throw new SaslError('NUL in LOGIN response');
  return text;
}
