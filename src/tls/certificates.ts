import { X509Certificate } from 'node:crypto';
import { readFileSync, unwatchFile, watchFile } from 'node:fs';
import { createSecureContext, type SecureContext } from 'node:tls';
import type { Logger } from 'pino';
import type { GateConfig } from '../config/load.js';
import { ConfigError, GateError } from '../errors.js';
import { ensureDevCertificate } from './devcert.js';

/** Asked for a certificate before load() read one: a wiring mistake, not a configuration problem. */
const notLoaded = (): GateError => new GateError('certificates_not_loaded', 'certificates not loaded');

/** How often the certificate files are checked for a renewal. */
const WATCH_INTERVAL_MS = 5000;

/**
 * The certificate new connections are served with. Reloaded when the files change (a renewal
 * by certbot or cert-manager) or on SIGHUP; connections already open keep the one they began
 * with. A renewal that cannot be read keeps the old certificate and says why.
 */
export class CertificateStore {
  private context: SecureContext | undefined;
  private paths: { cert: string; key: string } | undefined;
  private watching = false;
  private material: { cert: Buffer; key: Buffer } | undefined;
  private notAfter: Date | undefined;

  constructor(
    private readonly config: GateConfig,
    private readonly log: Logger,
  ) {}

  /**
   * Loads the configured certificate, or with `tls.development` makes a development one (with a
   * warning) when none is configured; without either there is nothing to serve.
   */
  async load(): Promise<void> {
    if (this.config.tls.cert && this.config.tls.key) {
      this.paths = { cert: this.config.tls.cert, key: this.config.tls.key };
    } else if (!this.config.tls.development) {
      throw new ConfigError('tls.cert', 'no certificate: set tls.cert and tls.key (or tls.development: true for demos and tests)');
    } else {
      const dev = await ensureDevCertificate(this.config.tls.devCertDir);
      this.log.warn(
        { cert: dev.certPath, ca: dev.caPath, generated: dev.generated },
        'tls.development: using a development certificate that clients will not trust; configure tls.cert and tls.key for production',
      );
      this.paths = { cert: dev.certPath, key: dev.keyPath };
    }
    this.context = this.read();
  }

  /** The context for a new connection. */
  current(): SecureContext {
    if (!this.context) throw notLoaded();
    return this.context;
  }

  /** Reads the files again; true when the new certificate is in use. */
  reload(reason: string): boolean {
    try {
      this.context = this.read();
      this.log.info({ reason, cert: this.paths?.cert }, 'certificate reloaded');
      return true;
    } catch (err) {
      this.log.error({ reason, err: (err as Error).message }, 'certificate reload failed; keeping the previous one');
      return false;
    }
  }

  /** Reloads whenever the certificate or key file changes. */
  watch(): void {
    if (!this.paths || this.watching) return;
    this.watching = true;
    for (const path of [this.paths.cert, this.paths.key]) {
      watchFile(path, { interval: WATCH_INTERVAL_MS, persistent: false }, (now, before) => {
        if (now.mtimeMs !== before.mtimeMs || now.size !== before.size) this.reload(`${path} changed`);
      });
    }
  }

  /** Stops watching the files. */
  stop(): void {
    if (!this.paths || !this.watching) return;
    for (const path of [this.paths.cert, this.paths.key]) unwatchFile(path);
    this.watching = false;
  }

  /** When the certificate new connections get expires (its first certificate's notAfter). */
  expiresAt(): Date | undefined {
    return this.notAfter;
  }

  /** The PEM files' contents in use, for servers that take them rather than a context. */
  pem(): { cert: Buffer; key: Buffer } {
    if (!this.material) throw notLoaded();
    return this.material;
  }

  private read(): SecureContext {
    const { cert, key } = this.paths!;
    const material = { cert: readFileSync(cert), key: readFileSync(key) };
    const context = createSecureContext({ ...material, minVersion: 'TLSv1.2' });
    this.material = material;
    this.notAfter = new Date(new X509Certificate(material.cert).validTo);
    return context;
  }
}
