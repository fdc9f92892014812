/** The `--target` URL: protocol, transport security, host and port. */
import { isIP } from 'node:net';

export type Protocol = 'imap' | 'smtp' | 'pop3';

export interface Target {
  protocol: Protocol;
  /** `true` for imaps://, smtps:// and pop3s:// (TLS from the first byte). */
  implicitTls: boolean;
  host: string;
  port: number;
  /** The URL as given, normalised (`scheme://host:port`). */
  url: string;
}

const SCHEMES: Record<string, { protocol: Protocol; implicitTls: boolean; defaultPort: number }> = {
  'imaps:': { protocol: 'imap', implicitTls: true, defaultPort: 993 },
  'imap:': { protocol: 'imap', implicitTls: false, defaultPort: 143 },
  'smtps:': { protocol: 'smtp', implicitTls: true, defaultPort: 465 },
  'smtp:': { protocol: 'smtp', implicitTls: false, defaultPort: 587 },
  'pop3s:': { protocol: 'pop3', implicitTls: true, defaultPort: 995 },
  'pop3:': { protocol: 'pop3', implicitTls: false, defaultPort: 110 },
};

/** Parses a target URL; throws a `RangeError` with a message meant for the command line. */
export function parseTarget(text: string): Target {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw new RangeError(`--target "${text}" is not a URL (imaps://host:port, imap://, smtps://, smtp://, pop3s:// or pop3://)`);
  }
  const scheme = SCHEMES[url.protocol];
  if (!scheme) {
    throw new RangeError(`--target must start with imaps://, imap://, smtps://, smtp://, pop3s:// or pop3://, not ${url.protocol}//`);
  }
  if (url.hostname === '') throw new RangeError(`--target "${text}" has no host`);
  if (url.username || url.password) {
    throw new RangeError('--target must not carry credentials: put them in the --users file');
  }
  if ((url.pathname !== '' && url.pathname !== '/') || url.search || url.hash) {
    throw new RangeError(`--target "${text}" must be scheme://host:port, without a path`);
  }
  // URL keeps IPv6 literals in brackets; sockets want them bare.
  const host = url.hostname.startsWith('[') ? url.hostname.slice(1, -1) : url.hostname;
  const port = url.port === '' ? scheme.defaultPort : Number(url.port);
  const shown = isIP(host) === 6 ? `[${host}]` : host;
  return { protocol: scheme.protocol, implicitTls: scheme.implicitTls, host, port, url: `${url.protocol}//${shown}:${port}` };
}
