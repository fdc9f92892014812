/**
 * Development TLS certificates: a small local CA and a server certificate it issued, so that
 * clients can trust the CA once (`curl --cacert`, NODE_EXTRA_CA_CERTS, a mail client's
 * certificate store) and keep trusting it when the server certificate is renewed.
 */
import { X509Certificate as NodeX509, KeyObject, createHash, createPrivateKey, randomBytes, webcrypto } from 'node:crypto';
import { chmod, mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { isIP } from 'node:net';
import { join } from 'node:path';
import type * as Asn1 from 'asn1js';
import type * as Pki from 'pkijs';
import { ConfigError, GateError } from '../errors.js';

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
        throw new ConfigError(
          'tls.devCertDir',
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

  const pki = await loadPki();
  await mkdir(dir, { recursive: true });

  const now = Date.now();
  // Backdated a little: a client whose clock runs slightly behind must not see "not yet valid".
  const notBefore = new Date(now - 3600 * 1000);
  const notAfter = new Date(now + validityDays * DAY_MS);

  const ca = (opts.reuseCa ?? true ? await loadCa(paths, notAfter) : undefined) ?? (await createCa(paths));

  const keys = (await crypto.subtle.generateKey(EC_KEY, true, ['sign', 'verify'])) as CryptoKeyPair;
  const firstDns = names.find((n) => isIP(n) === 0) ?? names[0] ?? 'localhost';
  const { asn1js, pkijs } = pki;
  const cert = await newCertificate(pki, {
    subject: distinguishedName(pki, firstDns),
    issuer: ca.cert.subject,
    notBefore,
    notAfter,
    publicKey: keys.publicKey,
    extensions: [
      extension(pki, OID.basicConstraints, true, new pkijs.BasicConstraints({ cA: false }).toSchema()),
      extension(pki, OID.keyUsage, true, keyUsage(pki, KEY_USAGE.digitalSignature)),
      extension(pki, OID.extKeyUsage, false, new pkijs.ExtKeyUsage({ keyPurposes: [OID.serverAuth] }).toSchema()),
      extension(pki, OID.subjectAltName, false, new pkijs.GeneralNames({ names: names.map((name) => generalName(pki, name)) }).toSchema()),
      extension(pki, OID.subjectKeyIdentifier, false, new asn1js.OctetString({ valueHex: await keyIdentifier(keys.publicKey) })),
      extension(
        pki,
        OID.authorityKeyIdentifier,
        false,
        new pkijs.AuthorityKeyIdentifier({ keyIdentifier: new asn1js.OctetString({ valueHex: ca.keyIdentifier }) }).toSchema(),
      ),
    ],
  });
  await cert.sign(ca.key, 'SHA-256', pki.engine);

  // An interrupted renewal leaves a certificate that does not match its key, which the next
  // ensureDevCertificate call notices and replaces.
  await writeAtomic(paths.keyPath, pkcs8Pem(keys.privateKey), 0o600);
  await writeAtomic(paths.certPath, certificatePem(cert), 0o644);
  return { certPath: paths.certPath, keyPath: paths.keyPath, caPath: paths.caPath, generated: true };
}

/** The SAN entries for `hostnames`: the loopback names first, then the given ones, deduplicated. */
export function devCertificateNames(hostnames: string[] = []): string[] {
  const names: string[] = [];
  for (const raw of [...DEFAULT_NAMES, ...hostnames]) {
    const name = raw.trim().toLowerCase().replace(/^\[(.*)\]$/, '$1');
    if (name === '') continue;
    if (isIP(name) === 0 && !/^(\*\.)?[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?)*$/.test(name)) {
      throw new GateError('bad_hostname', `not a host name or IP address: ${JSON.stringify(raw)}`);
    }
    if (!names.includes(name)) names.push(name);
  }
  return names;
}

interface Ca {
  cert: Pki.Certificate;
  key: CryptoKey;
  /** The CA's subject key identifier, which the server certificate names as its authority key. */
  keyIdentifier: Uint8Array;
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
    const { pkijs } = await loadPki();
    const cert = pkijs.Certificate.fromBER(new Uint8Array(nodeCert.raw));
    const ski = cert.extensions?.find((e) => e.extnID === OID.subjectKeyIdentifier)?.parsedValue as { valueBlock?: { valueHexView?: Uint8Array } } | undefined;
    const keyId = ski?.valueBlock?.valueHexView ?? sha1(cert.subjectPublicKeyInfo.subjectPublicKey.valueBlock.valueHexView);
    return { cert, key, keyIdentifier: new Uint8Array(keyId) };
  } catch {
    return undefined;
  }
}

async function createCa(paths: ReturnType<typeof pathsIn>): Promise<Ca> {
  const pki = await loadPki();
  const { asn1js, pkijs } = pki;
  const keys = (await crypto.subtle.generateKey(EC_KEY, true, ['sign', 'verify'])) as CryptoKeyPair;
  const now = Date.now();
  const name = distinguishedName(pki, DEV_CA_COMMON_NAME);
  const keyId = await keyIdentifier(keys.publicKey);
  const cert = await newCertificate(pki, {
    subject: name,
    issuer: name,
    notBefore: new Date(now - 3600 * 1000),
    notAfter: new Date(now + CA_VALIDITY_DAYS * DAY_MS),
    publicKey: keys.publicKey,
    extensions: [
      extension(pki, OID.basicConstraints, true, new pkijs.BasicConstraints({ cA: true, pathLenConstraint: 0 }).toSchema()),
      extension(pki, OID.keyUsage, true, keyUsage(pki, KEY_USAGE.keyCertSign | KEY_USAGE.cRLSign)),
      extension(pki, OID.subjectKeyIdentifier, false, new asn1js.OctetString({ valueHex: keyId })),
    ],
  });
  await cert.sign(keys.privateKey, 'SHA-256', pki.engine);
  await writeAtomic(paths.caKeyPath, pkcs8Pem(keys.privateKey), 0o600);
  await writeAtomic(paths.caPath, certificatePem(cert), 0o644);
  return { cert, key: keys.privateKey, keyIdentifier: keyId };
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

function serialNumber(): Uint8Array {
  const bytes = randomBytes(16);
  // Positive and without a leading zero byte, so every parser reads the same 16-byte integer.
  bytes[0] = ((bytes[0] ?? 0) & 0x7f) | 0x40;
  return new Uint8Array(bytes);
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

/** The object identifiers the certificates use (RFC 5280). */
const OID = {
  commonName: '2.5.4.3',
  organization: '2.5.4.10',
  subjectKeyIdentifier: '2.5.29.14',
  keyUsage: '2.5.29.15',
  subjectAltName: '2.5.29.17',
  basicConstraints: '2.5.29.19',
  authorityKeyIdentifier: '2.5.29.35',
  extKeyUsage: '2.5.29.37',
  serverAuth: '1.3.6.1.5.5.7.3.1',
} as const;

/** KeyUsage bits, numbered from the most significant bit of the first byte (RFC 5280 4.2.1.3). */
const KEY_USAGE = { digitalSignature: 1 << 0, keyCertSign: 1 << 5, cRLSign: 1 << 6 } as const;

interface PkiModules {
  asn1js: typeof Asn1;
  pkijs: typeof Pki;
  engine: Pki.CryptoEngine;
}

let pkiModules: Promise<PkiModules> | undefined;

/** pkijs and asn1js, loaded on first use: only a development certificate needs them. */
function loadPki(): Promise<PkiModules> {
  pkiModules ??= Promise.all([import('asn1js'), import('pkijs')]).then(([asn1js, pkijs]) => ({
    asn1js,
    pkijs,
    engine: new pkijs.CryptoEngine({ name: 'node', crypto }),
  }));
  return pkiModules;
}

/** An unsigned X.509 v3 certificate with a fresh serial number. */
async function newCertificate(
  { asn1js, pkijs, engine }: PkiModules,
  fields: {
    subject: Pki.RelativeDistinguishedNames;
    issuer: Pki.RelativeDistinguishedNames;
    notBefore: Date;
    notAfter: Date;
    publicKey: CryptoKey;
    extensions: Pki.Extension[];
  },
): Promise<Pki.Certificate> {
  const cert = new pkijs.Certificate({
    version: 2,
    serialNumber: new asn1js.Integer({ valueHex: serialNumber() }),
    subject: fields.subject,
    issuer: fields.issuer,
    notBefore: certificateTime(pkijs, fields.notBefore),
    notAfter: certificateTime(pkijs, fields.notAfter),
    extensions: fields.extensions,
  });
  await cert.subjectPublicKeyInfo.importKey(fields.publicKey, engine);
  return cert;
}

/** UTCTime through 2049, GeneralizedTime after (RFC 5280 4.1.2.5). */
function certificateTime(pkijs: typeof Pki, date: Date): Pki.Time {
  return new pkijs.Time({ type: date.getUTCFullYear() < 2050 ? 0 : 1, value: date });
}

/** `CN=<commonName>, O=sasl-gate development`: one attribute per RDN, not a multi-valued one. */
function distinguishedName({ asn1js, pkijs }: PkiModules, commonName: string): Pki.RelativeDistinguishedNames {
  const rdn = (type: string, value: string) =>
    new asn1js.Set({ value: [new pkijs.AttributeTypeAndValue({ type, value: new asn1js.Utf8String({ value }) }).toSchema()] });
  const name = new asn1js.Sequence({ value: [rdn(OID.commonName, commonName), rdn(OID.organization, 'sasl-gate development')] });
  // Parsed back, so that the encoding is kept as it is (pkijs writes all attributes into one RDN).
  return pkijs.RelativeDistinguishedNames.fromBER(name.toBER(false));
}

function extension({ pkijs }: PkiModules, extnID: string, critical: boolean, value: { toBER(sizeOnly?: boolean): ArrayBuffer }): Pki.Extension {
  return new pkijs.Extension({ extnID, critical, extnValue: value.toBER(false) });
}

/** A KeyUsage BIT STRING in DER: trailing zero bits dropped. */
function keyUsage({ asn1js }: PkiModules, bits: number): Asn1.BitString {
  let value = 0;
  for (let bit = 0; bit < 8; bit++) if (bits & (1 << bit)) value |= 0x80 >> bit;
  let unusedBits = 0;
  while (unusedBits < 7 && (value & (1 << unusedBits)) === 0) unusedBits++;
  return new asn1js.BitString({ valueHex: new Uint8Array([value]), unusedBits });
}

/** A SAN entry: dNSName for a name, iPAddress (4 or 16 bytes) for an address. */
function generalName({ asn1js, pkijs }: PkiModules, name: string): Pki.GeneralName {
  return isIP(name) === 0
    ? new pkijs.GeneralName({ type: 2, value: name })
    : new pkijs.GeneralName({ type: 7, value: new asn1js.OctetString({ valueHex: ipAddressBytes(name) }) });
}

/** The network-order bytes of an IPv4 or IPv6 address (an IPv6 address may end in IPv4 form). */
function ipAddressBytes(address: string): Uint8Array {
  const version = isIP(address);
  if (version === 4) return Uint8Array.from(address.split('.').map(Number));
  if (version !== 6) throw new RangeError(`not an IP address: ${address}`);
  let text = address.toLowerCase();
  const v4 = /(\d+\.\d+\.\d+\.\d+)$/.exec(text);
  if (v4) {
    const [a, b, c, d] = v4[1]!.split('.').map(Number) as [number, number, number, number];
    text = `${text.slice(0, v4.index)}${((a << 8) | b).toString(16)}:${((c << 8) | d).toString(16)}`;
  }
  const [head, tail] = text.includes('::') ? text.split('::') : [text, undefined];
  const groups = (part: string | undefined) => (part ? part.split(':') : []);
  const left = groups(head);
  const right = groups(tail);
  const all = tail === undefined ? left : [...left, ...Array<string>(8 - left.length - right.length).fill('0'), ...right];
  const bytes = new Uint8Array(16);
  all.forEach((group, i) => {
    const value = parseInt(group, 16);
    bytes[i * 2] = value >> 8;
    bytes[i * 2 + 1] = value & 0xff;
  });
  return bytes;
}

/** The key identifier of RFC 5280 4.2.1.2 (1): SHA-1 of the public key's bits. */
async function keyIdentifier(publicKey: CryptoKey): Promise<Uint8Array> {
  return sha1(new Uint8Array(await crypto.subtle.exportKey('raw', publicKey)));
}

function sha1(data: Uint8Array): Uint8Array {
  return new Uint8Array(createHash('sha1').update(data).digest());
}

function certificatePem(cert: Pki.Certificate): string {
  const base64 = Buffer.from(cert.toSchema(true).toBER(false)).toString('base64');
  return `-----BEGIN CERTIFICATE-----\n${base64.replace(/.{1,64}/g, '$&\n')}-----END CERTIFICATE-----\n`;
}
