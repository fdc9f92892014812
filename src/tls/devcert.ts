/**
 * Development TLS certificates: a small local CA and a server certificate it issued, so that
 * clients can trust the CA once (`curl --cacert`, NODE_EXTRA_CA_CERTS, a mail client's
 * certificate store) and keep trusting it when the server certificate is renewed.
 */
import { X509Certificate as NodeX509, KeyObject, createPrivateKey, randomBytes, webcrypto } from 'node:crypto';
import { chmod, mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { isIP } from 'node:net';
import { join } from 'node:path';
import type * as X509 from '@peculiar/x509';

/** Common name of the development CA; certificates it issued are ours to renew. */
export const DEV_CA_COMMON_NAME = 'sasl-gate development CA';

/** Options of {@link ensureDevCertificate} and {@link generateDevCertificate}. */
export interface DevCertificateOptions {
  /** DNS names and IP addresses for the SAN; `localhost`, 127.0.0.1 and ::1 are always added. */
  hostnames?: string[];
  /** Lifetime of a new server certificate; default 365 days. */
  validityDays?: number;
  /** Keep a still usable CA from `dir` when issuing a new server certificate; default true. */
  reuseCa?: boolean;
}

/** Where the PEM files are, and whether they were just written. */
export interface DevCertificate {
  certPath: string;
  keyPath: string;
  /**
   * The CA to trust: `dir/ca.crt` when the certificate is ours; for a certificate someone else
   * put into `dir`, the certificate itself.
   */
  caPath: string;
  generated: boolean;
}

const DAY_MS = 24 * 3600 * 1000;
/** Renew this long before expiry, so that a restart never serves a certificate about to lapse. */
const MIN_REMAINING_MS = 7 * DAY_MS;
const CA_VALIDITY_DAYS = 10 * 365;
const DEFAULT_NAMES = ['localhost', '127.0.0.1', '::1'];
const EC_KEY: EcKeyGenParams = { name: 'ECDSA', namedCurve: 'P-256' };
const EC_SIGN: EcdsaParams = { name: 'ECDSA', hash: 'SHA-256' };
const crypto = webcrypto as unknown as Crypto;

/**
 * Returns the development certificate in `dir`, reusing `server.crt` / `server.key` while they
 * stay valid for at least 7 more days (and, when ours, still cover the requested names),
 * otherwise issuing a new one.
 */
export async function ensureDevCertificate(
  dir: string,
  opts: DevCertificateOptions = {},
): Promise<DevCertificate> {
  const paths = pathsIn(dir);
  const names = devCertificateNames(opts.hostnames);
  const [certPem, keyPem] = await Promise.all([readOptional(paths.certPath), readOptional(paths.keyPath)]);

  if (certPem !== undefined) {
    const cert = parseCertificate(certPem);
    if (cert) {
      const ours = isIssuedByDevCa(cert);
      const fresh =
        keyPem !== undefined && isValidFor(cert, MIN_REMAINING_MS) && keyMatches(cert, keyPem);
      if (fresh && (!ours || coversNames(cert, names))) {
        const caExists = (await readOptional(paths.caPath)) !== undefined;
        return {
          certPath: paths.certPath,
          keyPath: paths.keyPath,
          caPath: ours && caExists ? paths.caPath : paths.certPath,
          generated: false,
        };
      }
      if (!ours) {
        // Not ours to replace: someone put a real certificate here, and silently swapping it
        // for a self-made one would be worse than refusing to start.
        throw new Error(
          `${paths.certPath} was not issued by the ${DEV_CA_COMMON_NAME} and is expired, about to ` +
            'expire, or lacks a matching server.key; renew it, or remove it to get a development certificate',
        );
      }
    }
  }

  return generateDevCertificate(dir, opts);
}

/**
 * Issues a new server certificate in `dir` (ECDSA P-256, SAN for the names, serverAuth, 1 year)
 * signed by the development CA there, creating the CA when missing or no longer usable.
 */
export async function generateDevCertificate(
  dir: string,
  opts: DevCertificateOptions = {},
): Promise<DevCertificate> {
  const paths = pathsIn(dir);
  const names = devCertificateNames(opts.hostnames);
  const validityDays = opts.validityDays ?? 365;
  if (!Number.isFinite(validityDays) || validityDays <= 0) throw new RangeError('validityDays must be positive');

  const x509 = await loadX509();
  await mkdir(dir, { recursive: true });

  const now = Date.now();
  // Backdated a little: a client whose clock runs slightly behind must not see "not yet valid".
  const notBefore = new Date(now - 3600 * 1000);
  const notAfter = new Date(now + validityDays * DAY_MS);

  const ca = (opts.reuseCa ?? true ? await loadCa(paths, notAfter) : undefined) ?? (await createCa(paths));

  const keys = (await crypto.subtle.generateKey(EC_KEY, true, ['sign', 'verify'])) as CryptoKeyPair;
  const firstDns = names.find((n) => isIP(n) === 0) ?? names[0] ?? 'localhost';
  const cert = await x509.X509CertificateGenerator.create(
    {
      serialNumber: serialNumber(),
      subject: `CN=${firstDns}, O=sasl-gate development`,
      issuer: ca.cert.subject,
      notBefore,
      notAfter,
      publicKey: keys.publicKey,
      signingKey: ca.key,
      signingAlgorithm: EC_SIGN,
      extensions: [
        new x509.BasicConstraintsExtension(false, undefined, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
        new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth], false),
        new x509.SubjectAlternativeNameExtension(
          names.map((value): X509.JsonGeneralName => ({ type: isIP(value) === 0 ? 'dns' : 'ip', value })),
          false,
        ),
        await x509.SubjectKeyIdentifierExtension.create(keys.publicKey, false, crypto),
        await x509.AuthorityKeyIdentifierExtension.create(ca.cert.publicKey, false, crypto),
      ],
    },
    crypto,
  );

  // An interrupted renewal leaves a certificate that does not match its key, which the next
  // ensureDevCertificate call notices and replaces.
  await writeAtomic(paths.keyPath, pkcs8Pem(keys.privateKey), 0o600);
  await writeAtomic(paths.certPath, cert.toString('pem') + '\n', 0o644);
  return { certPath: paths.certPath, keyPath: paths.keyPath, caPath: paths.caPath, generated: true };
}

/** The SAN entries for `hostnames`: the loopback names first, then the given ones, deduplicated. */
export function devCertificateNames(hostnames: string[] = []): string[] {
  const names: string[] = [];
  for (const raw of [...DEFAULT_NAMES, ...hostnames]) {
    const name = raw.trim().toLowerCase().replace(/^\[(.*)\]$/, '$1');
    if (name === '') continue;
    if (isIP(name) === 0 && !/^(\*\.)?[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?)*$/.test(name)) {
      throw new Error(`not a host name or IP address: ${JSON.stringify(raw)}`);
    }
    if (!names.includes(name)) names.push(name);
  }
  return names;
}

interface Ca {
  cert: X509.X509Certificate;
  key: CryptoKey;
}

function pathsIn(dir: string): { certPath: string; keyPath: string; caPath: string; caKeyPath: string } {
  return {
    certPath: join(dir, 'server.crt'),
    keyPath: join(dir, 'server.key'),
    caPath: join(dir, 'ca.crt'),
    caKeyPath: join(dir, 'ca.key'),
  };
}

/** The CA in `dir` when it is ours, matches its key and outlives `mustOutlive`. */
async function loadCa(
  paths: ReturnType<typeof pathsIn>,
  mustOutlive: Date,
): Promise<Ca | undefined> {
  const [certPem, keyPem] = await Promise.all([readOptional(paths.caPath), readOptional(paths.caKeyPath)]);
  if (certPem === undefined || keyPem === undefined) return undefined;
  const nodeCert = parseCertificate(certPem);
  if (
    !nodeCert ||
    !nodeCert.ca ||
    !nodeCert.subject.split('\n').includes(`CN=${DEV_CA_COMMON_NAME}`) ||
    Date.parse(nodeCert.validTo) < mustOutlive.getTime() ||
    !keyMatches(nodeCert, keyPem)
  ) {
    return undefined;
  }
  try {
    const keyObject = createPrivateKey(keyPem);
    if (keyObject.asymmetricKeyType !== 'ec') return undefined;
    const key = await crypto.subtle.importKey(
      'pkcs8',
      keyObject.export({ type: 'pkcs8', format: 'der' }),
      EC_KEY,
      false,
      ['sign'],
    );
    const x509 = await loadX509();
    return { cert: new x509.X509Certificate(certPem), key };
  } catch {
    return undefined;
  }
}

async function createCa(paths: ReturnType<typeof pathsIn>): Promise<Ca> {
  const x509 = await loadX509();
  const keys = (await crypto.subtle.generateKey(EC_KEY, true, ['sign', 'verify'])) as CryptoKeyPair;
  const now = Date.now();
  const cert = await x509.X509CertificateGenerator.createSelfSigned(
    {
      serialNumber: serialNumber(),
      name: `CN=${DEV_CA_COMMON_NAME}, O=sasl-gate development`,
      notBefore: new Date(now - 3600 * 1000),
      notAfter: new Date(now + CA_VALIDITY_DAYS * DAY_MS),
      keys,
      signingAlgorithm: EC_SIGN,
      extensions: [
        new x509.BasicConstraintsExtension(true, 0, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
        await x509.SubjectKeyIdentifierExtension.create(keys.publicKey, false, crypto),
      ],
    },
    crypto,
  );
  await writeAtomic(paths.caKeyPath, pkcs8Pem(keys.privateKey), 0o600);
  await writeAtomic(paths.caPath, cert.toString('pem') + '\n', 0o644);
  return { cert, key: keys.privateKey };
}

function parseCertificate(pem: string): NodeX509 | undefined {
  try {
    return new NodeX509(pem);
  } catch {
    return undefined;
  }
}

function isIssuedByDevCa(cert: NodeX509): boolean {
  return cert.issuer.split('\n').includes(`CN=${DEV_CA_COMMON_NAME}`);
}

function isValidFor(cert: NodeX509, remainingMs: number): boolean {
  const now = Date.now();
  return Date.parse(cert.validFrom) <= now && Date.parse(cert.validTo) - now >= remainingMs;
}

function keyMatches(cert: NodeX509, keyPem: string): boolean {
  try {
    return cert.checkPrivateKey(createPrivateKey(keyPem));
  } catch {
    return false;
  }
}

function coversNames(cert: NodeX509, names: string[]): boolean {
  return names.every((name) =>
    isIP(name) === 0
      ? cert.checkHost(name, { subject: 'never' }) !== undefined
      : cert.checkIP(name) !== undefined,
  );
}

function serialNumber(): string {
  const bytes = randomBytes(16);
  // Positive and without a leading zero byte, so every parser reads the same 16-byte integer.
  bytes[0] = ((bytes[0] ?? 0) & 0x7f) | 0x40;
  return bytes.toString('hex');
}

function pkcs8Pem(key: CryptoKey): string {
  return KeyObject.from(key).export({ type: 'pkcs8', format: 'pem' }) as string;
}

async function readOptional(path: string): Promise<string | undefined> {
  try {
    return await readFile(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
}

async function writeAtomic(path: string, content: string, mode: number): Promise<void> {
  const tmp = `${path}.${randomBytes(6).toString('hex')}.tmp`;
  await writeFile(tmp, content, { mode });
  // The umask may have narrowed or the file may be reused; the mode is part of the contract.
  await chmod(tmp, mode);
  await rename(tmp, path);
}

let x509Module: Promise<typeof X509> | undefined;

/**
 * @peculiar/x509, loaded on first use: it resolves its algorithms through tsyringe, which needs
 * the Reflect metadata polyfill in place before it loads.
 */
function loadX509(): Promise<typeof X509> {
  x509Module ??= import('reflect-metadata').then(() => import('@peculiar/x509'));
  return x509Module;
}
