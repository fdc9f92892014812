import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { AuthError, SaslError } from '../../../src/errors.js';
import { checkPasswordLogin } from '../../../src/auth/password-policy.js';
import {
  checkUsername,
  decodeLoginField,
  decodeOauthbearer,
  decodePlain,
  decodeSaslResponse,
  decodeXoauth2,
  encodePlain,
  encodeSaslChallenge,
  isDummyReply,
} from '../../../src/sasl/index.js';

/** Runs `fn` and fails the property if it throws anything other than the allowed error types. */
function onlyThrows(fn: () => unknown, ...allowed: Array<new (...args: never[]) => Error>): void {
  try {
    fn();
  } catch (error) {
    if (!allowed.some((type) => error instanceof type)) throw error;
  }
}

const anyBytes = fc.uint8Array({ maxLength: 300 }).map((array) => Buffer.from(array));

/** Byte strings built from the pieces the parsers look for, so that runs get past the first check. */
const saslishBytes = fc
  .array(
    fc.constantFrom(
      'n', 'y', 'p=', ',', 'a=', '=2C', '=3D', '=', '\x01', '\x01\x01', 'auth=', 'user=', 'host=', 'port=',
      'Bearer ', 'bearer', ' ', 'tok', '==', '993', '0', 'ü', '\0', '\r\n', '\u2028', '\ufffd', 'x',
    ),
    { maxLength: 25 },
  )
  .chain((pieces) =>
    fc.constantFrom(Buffer.from(pieces.join(''), 'utf8'), Buffer.concat([Buffer.from(pieces.join('')), Buffer.from([0xff])])),
  );

const b64token = fc.stringMatching(/^[A-Za-z0-9\-._~+/]{1,40}={0,2}$/);

/** User names, tokens and values: mostly well-formed, sometimes built from hostile pieces. */
const fragment = fc.oneof(
  { arbitrary: fc.constantFrom('tok', 'Ab9', 'a.b-c', '993', 'alice@example.org', 'x==', 'jürgen'), weight: 3 },
  {
    arbitrary: fc
      .array(
        fc.constantFrom('tok', 'Ab9', 'a', '=', '==', '=2C', '=3D', ',', ' ', '\x01', 'ü', '😀', '\0', '\r\n', '.', '-_~+/', '993', '0', '\u2028'),
        { minLength: 1, maxLength: 5 },
      )
      .map((pieces) => pieces.join('')),
    weight: 2,
  },
);

/** XOAUTH2-shaped messages whose parts are fragments, so that many of them decode. */
const xoauth2Shaped = fc
  .tuple(fragment, fc.constantFrom('Bearer ', 'bearer  ', 'Basic ', ''), fragment, fc.constantFrom('\x01\x01', '\x01', '', '\x01\x01\n'))
  .map(([user, scheme, token, end]) => Buffer.from(`user=${user}\x01auth=${scheme}${token}${end}`));

/** OAUTHBEARER-shaped messages whose parts are fragments, so that many of them decode. */
const oauthbearerShaped = fc
  .tuple(
    fc.constantFrom('n,', 'n,', 'y,', 'y,', 'p=tls-unique,', 'n'),
    fc.option(fragment, { nil: undefined }),
    fc.option(fc.tuple(fc.constantFrom('Bearer ', 'bearer ', ''), fragment), { nil: undefined, freq: 5 }),
    fc.array(fc.tuple(fc.constantFrom('host', 'port', 'x', 'k1', 'auth'), fragment), { maxLength: 1 }),
    fc.constantFrom('\x01', '\x01', '\x01', '', '\x01\x01'),
  )
  .map(([flag, authzid, auth, extras, end]) => {
    const pairs = extras.map(([key, value]) => `${key}=${value}`);
    if (auth !== undefined) pairs.push(`auth=${auth[0]}${auth[1]}`);
    const kv = pairs.map((pair) => `${pair}\x01`).join('');
    return Buffer.from(`${flag}${authzid === undefined ? '' : `a=${authzid}`},\x01${kv}${end}`);
  });

const validUser = fc.string({ unit: 'grapheme', minLength: 1, maxLength: 40 }).filter((name) => {
  try {
    checkUsername(name);
    return true;
  } catch {
    return false;
  }
});

describe('properties', () => {
  it('decodeSaslResponse only ever throws SaslError', () => {
    fc.assert(
      fc.property(fc.string({ unit: 'binary', maxLength: 60 }), (line) => onlyThrows(() => decodeSaslResponse(line), SaslError)),
    );
    fc.assert(
      fc.property(fc.stringMatching(/^[A-Za-z0-9+/=]{0,16}$/), (line) => onlyThrows(() => decodeSaslResponse(line), SaslError)),
    );
    fc.assert(fc.property(anyBytes, (line) => onlyThrows(() => decodeSaslResponse(line), SaslError)));
  });

  it('base64 round-trips both ways', () => {
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 1, maxLength: 200 }), (array) => {
        const data = Buffer.from(array);
        expect(decodeSaslResponse(encodeSaslChallenge(data))).toEqual(data);
      }),
    );
    // Every line that decodes is the one canonical encoding of its bytes.
    fc.assert(
      fc.property(fc.stringMatching(/^[A-Za-z0-9+/=]{1,16}$/), (line) => {
        let decoded: Buffer;
        try {
          decoded = decodeSaslResponse(line);
        } catch {
          return;
        }
        expect(line === '=' ? '' : line).toBe(encodeSaslChallenge(decoded));
      }),
    );
  });

  it('the decoders only ever throw SaslError, on random and on near-miss input', () => {
    for (const input of [anyBytes, saslishBytes, xoauth2Shaped, oauthbearerShaped]) {
      fc.assert(
        fc.property(input, (message) => {
          onlyThrows(() => decodePlain(message), SaslError);
          onlyThrows(() => decodeLoginField(message), SaslError);
          onlyThrows(() => decodeXoauth2(message), SaslError);
          onlyThrows(() => decodeOauthbearer(message), SaslError);
          onlyThrows(() => isDummyReply(message));
        }),
        { numRuns: 500 },
      );
    }
  });

  it('whatever the bearer decoders accept has a safe user and a b64token', () => {
    const accepted = { XOAUTH2: 0, OAUTHBEARER: 0 };
    fc.assert(
      fc.property(fc.oneof(xoauth2Shaped, oauthbearerShaped, saslishBytes), (message) => {
        for (const decode of [decodeXoauth2, decodeOauthbearer]) {
          let credentials;
          try {
            credentials = decode(message);
          } catch (error) {
            expect(error).toBeInstanceOf(SaslError);
            continue;
          }
          accepted[credentials.mechanism]++;
          expect(credentials.token).toMatch(/^[A-Za-z0-9\-._~+/]+=*$/);
          if (credentials.user !== undefined) expect(() => checkUsername(credentials.user as string)).not.toThrow();
          if (credentials.mechanism === 'XOAUTH2') expect(credentials.user).toBeDefined();
          if (credentials.port !== undefined) expect(credentials.port).toBeGreaterThanOrEqual(1);
          if (credentials.host !== undefined) expect(credentials.host).toMatch(/^[\x21-\x7e]+$/);
        }
      }),
      { numRuns: 3_000 },
    );
    // The generators are only useful if they reach the accepting paths too.
    expect(accepted.XOAUTH2).toBeGreaterThan(10);
    expect(accepted.OAUTHBEARER).toBeGreaterThan(10);
  });

  it('PLAIN round-trips', () => {
    const field = fc.string({ unit: 'grapheme', maxLength: 30 }).filter((text) => !text.includes('\0'));
    fc.assert(
      fc.property(field, field.filter((t) => t.length > 0), field.filter((t) => t.length > 0), (authzid, authcid, password) => {
        const credentials = { authzid, authcid, password };
        expect(decodePlain(encodePlain(credentials))).toEqual(credentials);
      }),
    );
  });

  it('XOAUTH2 and OAUTHBEARER round-trip any valid user and token', () => {
    const escapeSaslname = (name: string) => name.replace(/=/g, '=3D').replace(/,/g, '=2C');
    fc.assert(
      fc.property(validUser, b64token, fc.integer({ min: 1, max: 65535 }), (user, token, port) => {
        const xoauth2 = Buffer.from(`user=${user}\x01auth=Bearer ${token}\x01\x01`);
        expect(decodeXoauth2(decodeSaslResponse(encodeSaslChallenge(xoauth2)))).toEqual({
          mechanism: 'XOAUTH2',
          user,
          token,
        });
        const oauthbearer = Buffer.from(
          `n,a=${escapeSaslname(user)},\x01host=mail.example.org\x01port=${port}\x01auth=Bearer ${token}\x01\x01`,
        );
        expect(decodeOauthbearer(oauthbearer)).toEqual({
          mechanism: 'OAUTHBEARER',
          user,
          token,
          host: 'mail.example.org',
          port,
        });
      }),
    );
  });

  it('checkUsername only ever throws SaslError and never accepts a control character', () => {
    fc.assert(
      fc.property(fc.string({ unit: 'binary', maxLength: 300 }), (name) => {
        try {
          checkUsername(name);
        } catch (error) {
          expect(error).toBeInstanceOf(SaslError);
          return;
        }
        expect(name).not.toMatch(/[\u0000-\u001f\u007f-\u009f\u2028\u2029\ufffd]/);
        expect(Buffer.byteLength(name)).toBeLessThanOrEqual(255);
        expect(name.trim()).toBe(name);
      }),
    );
  });

  it('checkPasswordLogin never lets the master user or the separator through', () => {
    const namePart = fc.constantFrom('sasl-gate', 'SASL-GATE', 'alice', 'bob', '*', ' ', 'ü', '\r\n', '\0', '@', 'x');
    const name = fc.array(namePart, { maxLength: 4 }).map((parts) => parts.join(''));
    fc.assert(
      fc.property(fc.option(name, { nil: undefined }), name, (authzid, authcid) => {
        const login = authzid === undefined ? { authcid } : { authzid, authcid };
        try {
          checkPasswordLogin(login, { masterUser: 'sasl-gate', masterSeparator: '*' });
        } catch (error) {
          expect(error instanceof AuthError || error instanceof SaslError).toBe(true);
          return;
        }
        expect(authcid.trim().toLowerCase()).not.toBe('sasl-gate');
        expect(authcid).not.toContain('*');
        expect(authzid ?? '').not.toContain('*');
        if (authzid) expect(authzid).toBe(authcid);
      }),
      { numRuns: 2_000 },
    );
  });
});
