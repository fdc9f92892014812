/**
 * Token validation throughput beside the floor cost of one signature check, and the number of
 * provider calls that 1,000 logins with one token cause. Everything runs in this one process
 * against a real oidc-provider (the development IdP) on a loopback port.
 *
 *   npx vite-node bench/token-validation.ts            # table on stdout, progress on stderr
 *   npx vite-node bench/token-validation.ts --json     # one JSON object on stdout
 *   options: --rounds N (default 7), --round-ms N (default 250), --warmup-ms N (default 300)
 *
 * Built for a noisy shared machine: every sample of a benchmark is paired with a sample of the
 * raw `jwtVerify` baseline taken right beside it, and each ratio is the median of those paired
 * ratios, so that load from a neighbour moves numerator and denominator together. CPU time per
 * operation is reported too; it moves less with load than wall-clock time. See bench/README.md.
 */
import { cpus, loadavg } from 'node:os';
import { performance } from 'node:perf_hooks';
import { importJWK, jwtVerify, type JWK } from 'jose';
import { ChainValidator } from '../src/auth/chain.js';
import type { TokenIdentity } from '../src/auth/validator.js';
import { configSchema, type OAuthConfig } from '../src/config/schema.js';
import { startDevIdp, type DevIdp } from '../tools/idp.js';

// ---------------------------------------------------------------------------------------------
// Options

function numberOption(args: string[], name: string, fallback: number, min: number): number {
  const at = args.indexOf(name);
  if (at === -1) return fallback;
  const value = Number(args[at + 1]);
  if (!Number.isFinite(value) || value < min) throw new Error(`${name} needs a number >= ${min}`);
  return Math.floor(value);
}

const args = process.argv.slice(2);
const JSON_OUTPUT = args.includes('--json');
const ROUNDS = numberOption(args, '--rounds', 7, 1);
const ROUND_MS = numberOption(args, '--round-ms', 250, 50);
const WARMUP_MS = numberOption(args, '--warmup-ms', 300, 0);
/** Distinct tokens validate() sees per round on the cache-miss benchmarks. */
const DISTINCT_JWT_PER_ROUND = 600;
const DISTINCT_OPAQUE_PER_ROUND = 150;
const LOGINS = 1000;

const USER = { id: 'alice', email: 'alice@example.test' };
const AUDIENCE = 'mail';

/** Progress goes to stderr, so that `--json` leaves exactly one JSON object on stdout. */
function progress(message: string): void {
  if (!JSON_OUTPUT) process.stderr.write(`${message}\n`);
}

// ---------------------------------------------------------------------------------------------
// Measuring

interface Sample {
  ops: number;
  /** Wall-clock time. */
  seconds: number;
  /** CPU time of the whole process: every thread (WebCrypto runs in libuv's pool), the in-process IdP included. */
  cpuSeconds: number;
}

const rate = (s: Sample): number => s.ops / s.seconds;
const cpuPerOp = (s: Sample): number => s.cpuSeconds / s.ops;

function cpuNow(): number {
  const { user, system } = process.cpuUsage();
  return (user + system) / 1e6;
}

/** Runs `op` one after another (each awaited) for `ms` milliseconds. */
async function forTime(op: () => Promise<unknown>, ms: number): Promise<Sample> {
  let ops = 0;
  const cpu = cpuNow();
  const start = performance.now();
  const end = start + ms;
  let now = start;
  while (now < end) {
    await op();
    ops += 1;
    now = performance.now();
  }
  return { ops, seconds: (now - start) / 1000, cpuSeconds: cpuNow() - cpu };
}

/** Runs `op` once for each item, one after another. */
async function forEach<T>(items: T[], op: (item: T) => Promise<unknown>): Promise<Sample> {
  const cpu = cpuNow();
  const start = performance.now();
  for (const item of items) await op(item);
  return { ops: items.length, seconds: (performance.now() - start) / 1000, cpuSeconds: cpuNow() - cpu };
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

interface Bench {
  key: BenchKey;
  label: string;
  /** One round's measurement; `round` picks a slice of pre-minted tokens where needed. */
  run(round: number): Promise<Sample>;
  warmUp(): Promise<unknown>;
}

type BenchKey =
  | 'rawJwtVerify'
  | 'cached'
  | 'uncachedJwtExplain'
  | 'uncachedJwtDistinct'
  | 'introspectionExplain'
  | 'introspectionDistinct';

interface BenchResult {
  label: string;
  /** Median of the rounds. */
  opsPerSec: number;
  minOpsPerSec: number;
  maxOpsPerSec: number;
  /** Operations and wall-clock seconds over all rounds. */
  ops: number;
  seconds: number;
  /** Process CPU time per operation (median of the rounds), in microseconds. */
  cpuMicrosPerOp: number;
  /** Median over the rounds of ops/s divided by the ops/s of the raw jwtVerify measured right beside it. */
  vsRawJwtVerify: number;
  /** The same with CPU time per operation instead of wall-clock ops/s: less moved by other processes. */
  vsRawJwtVerifyCpu: number;
}

// ---------------------------------------------------------------------------------------------
// Set-up

function oauthConfig(idp: DevIdp, validation: Array<'jwt' | 'introspection' | 'userinfo'>): OAuthConfig {
  return configSchema.parse({
    listeners: [{ protocol: 'imap', bind: '127.0.0.1:0' }],
    // Only the oauth section is used: no listener runs, so no certificate is needed.
    tls: { development: true },
    backends: { imap: { host: '127.0.0.1' } },
    master: { user: 'sasl-gate', password: 'bench' },
    oauth: {
      issuer: idp.issuer,
      audience: [AUDIENCE],
      validation,
      clientId: idp.clientId,
      clientSecret: idp.clientSecret,
      usernameClaims: ['email', 'preferred_username'],
    },
  }).oauth;
}

function validator(oauth: OAuthConfig): ChainValidator {
  return new ChainValidator(oauth, { masterSeparator: '*' });
}

/** Every measured operation must really accept the token; a benchmark of failures is worthless. */
function expectAlice(identity: TokenIdentity): void {
  if (identity.identity !== USER.email) throw new Error(`unexpected identity ${identity.identity}`);
}

interface ProviderCallCount {
  logins: number;
  mode: 'sequential' | 'concurrent';
  jwks: number;
  introspection: number;
  userinfo: number;
  /** jwks + introspection + userinfo: the calls the target of 1 is about. */
  total: number;
  /** Discovery, once per validator (process), shown apart. */
  discovery: number;
  cache: { hits: number; misses: number; joined: number };
}

/** A fresh (cold) validator, counters at zero, then LOGINS validate() calls with one token. */
async function countProviderCalls(
  idp: DevIdp,
  oauth: OAuthConfig,
  token: string,
  mode: 'sequential' | 'concurrent',
): Promise<ProviderCallCount> {
  const v = validator(oauth);
  idp.resetCounters();
  if (mode === 'sequential') {
    for (let i = 0; i < LOGINS; i += 1) expectAlice(await v.validate(token));
  } else {
    const all = await Promise.all(Array.from({ length: LOGINS }, () => v.validate(token)));
    all.forEach(expectAlice);
  }
  const { jwks, introspection, userinfo, discovery } = idp.requests;
  return {
    logins: LOGINS,
    mode,
    jwks,
    introspection,
    userinfo,
    total: jwks + introspection + userinfo,
    discovery,
    cache: { ...v.cache.stats },
  };
}

async function mintMany(idp: DevIdp, count: number, format: 'jwt' | 'opaque'): Promise<string[]> {
  const tokens: string[] = [];
  // A few at a time: the IdP runs in this process, and minting is only set-up.
  for (let i = 0; i < count; i += 8) {
    const batch = Math.min(8, count - i);
    tokens.push(
      ...(await Promise.all(
        Array.from({ length: batch }, () =>
          format === 'jwt'
            ? idp.signToken(idp.claimsFor(USER.id, { audience: AUDIENCE }))
            : idp.mintAccessToken({ user: USER.id, format: 'opaque', audience: AUDIENCE }),
        ),
      )),
    );
  }
  return tokens;
}

// ---------------------------------------------------------------------------------------------
// Output

const fmtInt = (n: number): string => Math.round(n).toLocaleString('en-US');

function fmtRatio(r: number): string {
  if (r >= 100) return fmtInt(r);
  if (r >= 10) return r.toFixed(1);
  if (r >= 1) return r.toFixed(2);
  return Number(r.toPrecision(2)).toString();
}

function pad(text: string, width: number, right = false): string {
  return right ? text.padStart(width) : text.padEnd(width);
}

// ---------------------------------------------------------------------------------------------
// Main

async function main(): Promise<void> {
  const started = performance.now();
  const loadBefore = loadavg();
  progress('starting the development IdP ...');
  const idp = await startDevIdp({ users: [USER], audience: AUDIENCE });
  try {
    const jwtOauth = oauthConfig(idp, ['jwt']);
    const introspectionOauth = oauthConfig(idp, ['introspection']);

    // Tokens, all minted before anything is measured.
    progress('minting tokens ...');
    const jwt = await idp.mintAccessToken({ user: USER.id, format: 'jwt' });
    const opaque = await idp.mintAccessToken({ user: USER.id, format: 'opaque', audience: AUDIENCE });
    const distinctJwts = await mintMany(idp, DISTINCT_JWT_PER_ROUND * (ROUNDS + 1), 'jwt');
    const distinctOpaque = await mintMany(idp, DISTINCT_OPAQUE_PER_ROUND * (ROUNDS + 1), 'opaque');
    const slice = (tokens: string[], per: number, round: number) => tokens.slice(round * per, (round + 1) * per);

    // The baseline's key: the IdP's JWKS fetched once, now, and imported; no network later.
    const jwks = (await (await fetch(idp.jwksUri)).json()) as { keys: JWK[] };
    const jwk = jwks.keys.find((k) => k.kid === idp.kid);
    if (!jwk) throw new Error('the IdP publishes no key with its current kid');
    const publicKey = await importJWK(jwk, 'RS256');
    const rawOptions = { issuer: idp.issuer, audience: AUDIENCE, algorithms: ['RS256'] };

    const jwtValidator = validator(jwtOauth);
    const introspectionValidator = validator(introspectionOauth);
    // Discovery, keys and keep-alive connections in place before any timing.
    expectAlice(await jwtValidator.validate(jwt));
    expectAlice((await introspectionValidator.explain(opaque)).result);

    const raw: Bench = {
      key: 'rawJwtVerify',
      label: 'raw jose.jwtVerify, local key (baseline)',
      run: () => forTime(() => jwtVerify(jwt, publicKey, rawOptions), ROUND_MS),
      warmUp: () => forTime(() => jwtVerify(jwt, publicKey, rawOptions), WARMUP_MS),
    };
    const benches: Bench[] = [
      {
        key: 'cached',
        label: 'cached: validate(same token)',
        run: () => forTime(() => jwtValidator.validate(jwt), ROUND_MS),
        warmUp: () => forTime(() => jwtValidator.validate(jwt), WARMUP_MS),
      },
      {
        key: 'uncachedJwtExplain',
        label: 'uncached JWT: explain(token)',
        run: () => forTime(() => jwtValidator.explain(jwt), ROUND_MS),
        warmUp: () => forTime(() => jwtValidator.explain(jwt), WARMUP_MS),
      },
      {
        key: 'uncachedJwtDistinct',
        label: `uncached JWT: validate(${DISTINCT_JWT_PER_ROUND} distinct)`,
        run: (round) =>
          forEach(slice(distinctJwts, DISTINCT_JWT_PER_ROUND, round + 1), async (t) =>
            expectAlice(await jwtValidator.validate(t)),
          ),
        warmUp: () =>
          forEach(slice(distinctJwts, DISTINCT_JWT_PER_ROUND, 0), async (t) => expectAlice(await jwtValidator.validate(t))),
      },
      {
        key: 'introspectionExplain',
        label: 'introspection: explain(opaque)',
        run: () => forTime(() => introspectionValidator.explain(opaque), ROUND_MS),
        warmUp: () => forTime(() => introspectionValidator.explain(opaque), WARMUP_MS),
      },
      {
        key: 'introspectionDistinct',
        label: `introspection: validate(${DISTINCT_OPAQUE_PER_ROUND} distinct)`,
        run: (round) =>
          forEach(slice(distinctOpaque, DISTINCT_OPAQUE_PER_ROUND, round + 1), async (t) =>
            expectAlice(await introspectionValidator.validate(t)),
          ),
        warmUp: () =>
          forEach(slice(distinctOpaque, DISTINCT_OPAQUE_PER_ROUND, 0), async (t) =>
            expectAlice(await introspectionValidator.validate(t)),
          ),
      },
    ];

    // Correctness of the benchmarked calls themselves, once.
    await jwtVerify(jwt, publicKey, rawOptions);
    expectAlice((await jwtValidator.explain(jwt)).result);
    expectAlice((await introspectionValidator.explain(opaque)).result);

    progress(`warming up (${WARMUP_MS} ms each) ...`);
    for (const bench of [raw, ...benches]) await bench.warmUp();

    // Each benchmark's sample is paired with a baseline sample taken right next to it, before
    // or after by turns, so that a ratio compares two measurements under the same load.
    progress(`measuring: ${ROUNDS} rounds, each benchmark paired with a raw jwtVerify of ${ROUND_MS} ms ...`);
    const pairs = new Map<BenchKey, Array<{ raw: Sample; own: Sample }>>(benches.map((b) => [b.key, []]));
    for (let round = 0; round < ROUNDS; round += 1) {
      // The order rotates, so that no benchmark always runs right after the same one.
      const order = benches.map((_, i) => benches[(i + round) % benches.length]!);
      for (const [i, bench] of order.entries()) {
        let baseline: Sample;
        let own: Sample;
        if ((round + i) % 2 === 0) {
          baseline = await raw.run(round);
          own = await bench.run(round);
        } else {
          own = await bench.run(round);
          baseline = await raw.run(round);
        }
        pairs.get(bench.key)!.push({ raw: baseline, own });
      }
    }

    const summarize = (label: string, own: Sample[], rawOnes: Sample[]): BenchResult => {
      const rates = own.map(rate);
      return {
        label,
        opsPerSec: median(rates),
        minOpsPerSec: Math.min(...rates),
        maxOpsPerSec: Math.max(...rates),
        ops: own.reduce((n, s) => n + s.ops, 0),
        seconds: own.reduce((n, s) => n + s.seconds, 0),
        cpuMicrosPerOp: median(own.map(cpuPerOp)) * 1e6,
        vsRawJwtVerify: median(own.map((s, i) => rate(s) / rate(rawOnes[i]!))),
        vsRawJwtVerifyCpu: median(own.map((s, i) => cpuPerOp(rawOnes[i]!) / cpuPerOp(s))),
      };
    };
    const allRaw = [...pairs.values()].flatMap((p) => p.map((x) => x.raw));
    const results = { rawJwtVerify: summarize(raw.label, allRaw, allRaw) } as Record<BenchKey, BenchResult>;
    for (const bench of benches) {
      const own = pairs.get(bench.key)!;
      results[bench.key] = summarize(
        bench.label,
        own.map((p) => p.own),
        own.map((p) => p.raw),
      );
    }

    progress(`counting provider calls for ${LOGINS} logins with one token ...`);
    const providerCalls = {
      jwt: [
        await countProviderCalls(idp, jwtOauth, jwt, 'sequential'),
        await countProviderCalls(idp, jwtOauth, jwt, 'concurrent'),
      ],
      introspection: [
        await countProviderCalls(idp, introspectionOauth, opaque, 'sequential'),
        await countProviderCalls(idp, introspectionOauth, opaque, 'concurrent'),
      ],
    };

    const allCounts = [...providerCalls.jwt, ...providerCalls.introspection];
    const targetMet = allCounts.every((c) => c.total <= 1);
    const elapsedSeconds = (performance.now() - started) / 1000;
    const loadAfter = loadavg();
    const ratioOf = (key: BenchKey, cpu = false) =>
      Number((cpu ? results[key].vsRawJwtVerifyCpu : results[key].vsRawJwtVerify).toPrecision(3));

    if (JSON_OUTPUT) {
      const round = (n: number, digits: number) => Number(n.toFixed(digits));
      process.stdout.write(
        `${JSON.stringify({
          node: process.version,
          cpus: cpus().length,
          loadavgBefore: loadBefore.map((n) => round(n, 2)),
          loadavgAfter: loadAfter.map((n) => round(n, 2)),
          rounds: ROUNDS,
          roundMs: ROUND_MS,
          warmupMs: WARMUP_MS,
          results: Object.fromEntries(
            Object.entries(results).map(([k, r]) => [
              k,
              {
                ...r,
                opsPerSec: round(r.opsPerSec, 1),
                minOpsPerSec: round(r.minOpsPerSec, 1),
                maxOpsPerSec: round(r.maxOpsPerSec, 1),
                seconds: round(r.seconds, 3),
                cpuMicrosPerOp: round(r.cpuMicrosPerOp, 2),
                vsRawJwtVerify: Number(r.vsRawJwtVerify.toPrecision(3)),
                vsRawJwtVerifyCpu: Number(r.vsRawJwtVerifyCpu.toPrecision(3)),
              },
            ]),
          ),
          // Against raw jwtVerify (wall-clock ops/s): the three headline figures, then the
          // distinct-token variants; ratiosCpu: the same by CPU time per operation.
          ratios: {
            cached: ratioOf('cached'),
            uncachedJwt: ratioOf('uncachedJwtExplain'),
            introspection: ratioOf('introspectionExplain'),
            uncachedJwtDistinct: ratioOf('uncachedJwtDistinct'),
            introspectionDistinct: ratioOf('introspectionDistinct'),
          },
          ratiosCpu: {
            cached: ratioOf('cached', true),
            uncachedJwt: ratioOf('uncachedJwtExplain', true),
            introspection: ratioOf('introspectionExplain', true),
            uncachedJwtDistinct: ratioOf('uncachedJwtDistinct', true),
            introspectionDistinct: ratioOf('introspectionDistinct', true),
          },
          providerCalls,
          providerCallTargetMet: targetMet,
          elapsedSeconds: round(elapsedSeconds, 1),
        })}\n`,
      );
      return;
    }

    const out: string[] = [];
    out.push(
      `token validation: node ${process.version}, ${cpus().length} CPUs, load ${loadBefore
        .map((n) => n.toFixed(2))
        .join(' ')} before, ${loadAfter.map((n) => n.toFixed(2)).join(' ')} after`,
    );
    out.push(
      `${ROUNDS} rounds; in each, every benchmark runs beside its own ${ROUND_MS} ms raw jwtVerify sample ` +
        `(timed rows: ${ROUND_MS} ms; distinct rows: a fixed token count); ${WARMUP_MS} ms warm-up each`,
    );
    out.push('ops/s and cpu us/op: medians of the rounds; vs raw: median of the paired ratios (wall clock; CPU time)');
    out.push('');
    const w = [40, 10, 19, 9, 11, 9, 9];
    out.push(
      pad('benchmark', w[0]!) +
        pad('ops/s', w[1]!, true) +
        pad('min..max', w[2]!, true) +
        pad('ops', w[3]!, true) +
        pad('cpu us/op', w[4]!, true) +
        pad('vs raw', w[5]!, true) +
        pad('(cpu)', w[6]!, true),
    );
    for (const key of ['rawJwtVerify', ...benches.map((b) => b.key)] as BenchKey[]) {
      const r = results[key];
      const baselineRow = key === 'rawJwtVerify';
      out.push(
        pad(r.label, w[0]!) +
          pad(fmtInt(r.opsPerSec), w[1]!, true) +
          pad(`${fmtInt(r.minOpsPerSec)}..${fmtInt(r.maxOpsPerSec)}`, w[2]!, true) +
          pad(fmtInt(r.ops), w[3]!, true) +
          pad(r.cpuMicrosPerOp.toFixed(r.cpuMicrosPerOp < 10 ? 2 : 1), w[4]!, true) +
          pad(baselineRow ? '1x' : `${fmtRatio(r.vsRawJwtVerify)}x`, w[5]!, true) +
          pad(baselineRow ? '1x' : `${fmtRatio(r.vsRawJwtVerifyCpu)}x`, w[6]!, true),
      );
    }
    out.push('');
    const line = (name: string, key: BenchKey) =>
      `${name} = ${fmtRatio(results[key].vsRawJwtVerify)}x raw jwtVerify` +
      `   (by CPU time: ${fmtRatio(results[key].vsRawJwtVerifyCpu)}x)`;
    out.push(line('cached', 'cached'));
    out.push(line('uncached JWT', 'uncachedJwtExplain'));
    out.push(line('introspection', 'introspectionExplain'));
    out.push(line('uncached JWT, distinct tokens through validate()', 'uncachedJwtDistinct'));
    out.push(line('introspection, distinct tokens through validate()', 'introspectionDistinct'));
    out.push('');
    out.push(`provider calls for ${fmtInt(LOGINS)} logins with one token, each on a fresh (cold) validator; target: 1`);
    const c = [15, 12, 6, 15, 10, 7, 11, 22];
    out.push(
      pad('set-up', c[0]!) +
        pad('logins', c[1]!) +
        pad('jwks', c[2]!, true) +
        pad('introspection', c[3]!, true) +
        pad('userinfo', c[4]!, true) +
        pad('total', c[5]!, true) +
        pad('discovery', c[6]!, true) +
        pad('hits/misses/joined', c[7]!, true),
    );
    for (const [setup, counts] of Object.entries(providerCalls)) {
      for (const n of counts) {
        out.push(
          pad(setup, c[0]!) +
            pad(n.mode, c[1]!) +
            pad(String(n.jwks), c[2]!, true) +
            pad(String(n.introspection), c[3]!, true) +
            pad(String(n.userinfo), c[4]!, true) +
            pad(String(n.total), c[5]!, true) +
            pad(String(n.discovery), c[6]!, true) +
            pad(`${n.cache.hits}/${n.cache.misses}/${n.cache.joined}`, c[7]!, true),
        );
      }
    }
    for (const [setup, counts] of Object.entries(providerCalls)) {
      for (const n of counts) {
        out.push(
          `${setup}, ${fmtInt(LOGINS)} ${n.mode} logins: ${n.jwks} jwks + ${n.introspection} introspection + ` +
            `${n.userinfo} userinfo = ${n.total} provider call${n.total === 1 ? '' : 's'} (+${n.discovery} discovery)`,
        );
      }
    }
    out.push(`target of 1 provider call per ${fmtInt(LOGINS)} logins: ${targetMet ? 'met' : 'NOT met'}`);
    out.push(`run took ${elapsedSeconds.toFixed(1)} s`);
    process.stdout.write(`${out.join('\n')}\n`);
  } finally {
    await idp.close();
  }
}

await main();
