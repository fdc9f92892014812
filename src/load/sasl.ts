/** The client side of the SASL mechanisms the harness speaks. */

export const MECHS = ['xoauth2', 'oauthbearer', 'plain'] as const;
export type Mech = (typeof MECHS)[number];

/** Mechanism names on the wire. */
export const MECH_NAMES: Record<Mech, string> = { xoauth2: 'XOAUTH2', oauthbearer: 'OAUTHBEARER', plain: 'PLAIN' };

/** A user and a password or access token. */
export interface Credential {
  user: string;
  secret: string;
}

/** RFC 5801 saslname: `,` and `=` escaped. */
function saslname(user: string): string {
  return user.replace(/=/g, '=3D').replace(/,/g, '=2C');
}

/** The base64 initial response of `mech` for a credential (the secret is a token for the OAuth mechanisms). */
export function initialResponse(mech: Mech, credential: Credential, host: string, port: number): string {
  const { user, secret } = credential;
  let message: string;
  switch (mech) {
    case 'xoauth2':
      message = `user=${user}\x01auth=Bearer ${secret}\x01\x01`;
      break;
    case 'oauthbearer':
      message = `n,a=${saslname(user)},\x01host=${host}\x01port=${port}\x01auth=Bearer ${secret}\x01\x01`;
      break;
    case 'plain':
      message = `\0${user}\0${secret}`;
      break;
  }
  return Buffer.from(message, 'utf8').toString('base64');
}

/**
 * What the client answers to a challenge after it sent its credentials: the OAuth mechanisms'
 * error challenge gets the dummy reply (RFC 7628: %x01; XOAUTH2: an empty line), anything else
 * a cancel.
 */
export function answerToChallenge(mech: Mech): string {
  switch (mech) {
    case 'oauthbearer':
      return 'AQ==';
    case 'xoauth2':
      return '';
    case 'plain':
      return '*';
  }
}
