/**
 * Pure SASL codecs: bytes in, values out, no I/O. Every malformed input ends in a SaslError.
 */
export { decodeSaslResponse, encodeSaslChallenge, decodeUtf8Strict } from './base64.js';
export { decodePlain, encodePlain, type PlainCredentials } from './plain.js';
export { LOGIN_USERNAME_PROMPT, LOGIN_PASSWORD_PROMPT, decodeLoginField } from './login.js';
export { decodeXoauth2, decodeOauthbearer, type BearerCredentials } from './bearer.js';
export { xoauth2ErrorChallenge, oauthbearerErrorChallenge, isDummyReply } from './challenge.js';
export { checkUsername, MAX_USERNAME_BYTES } from './username.js';
