import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

/** Protocols, as metric labels. */
export type Protocol = 'imap' | 'smtp' | 'pop3' | 'sieve';

/** How an authentication attempt ended, as a metric label. */
export type AuthResult = 'success' | 'failure' | 'temporary_failure';

/**
 * sasl-gate's Prometheus metrics, in one registry served on the admin listener. Label values
 * come from small fixed sets (listeners, mechanisms, reason codes), never from user input.
 */
export class Metrics {
  readonly registry = new Registry();
  readonly connectionsOpen: Gauge<'listener'>;
  readonly connectionsTotal: Counter<'listener'>;
  readonly authentications: Counter<'listener' | 'mechanism' | 'result' | 'reason' | 'credential'>;
  readonly validationSeconds: Histogram<'strategy' | 'verdict'>;
  readonly backendLoginSeconds: Histogram<'protocol' | 'result'>;
  readonly bytesRelayed: Counter<'listener' | 'direction'>;
  readonly tlsHandshakeFailures: Counter<'listener'>;
  readonly refusals: Counter<'listener' | 'limit'>;

  constructor(
    options: {
      tokenCache?: () => { hits: number; misses: number; joined: number; size: number };
      /** The provider circuit breaker's state now. */
      breakerState?: () => 'closed' | 'open' | 'half-open';
      /** When the certificate served to new connections expires. */
      certificateExpiry?: () => Date | undefined;
      /** Whether each dependency answered its most recent probe or connection (what /readyz says). */
      dependencies?: () => Array<{ dependency: string; up: boolean }>;
    } = {},
  ) {
    const registry = this.registry;
    collectDefaultMetrics({ register: registry, prefix: 'sasl_gate_process_' });
    this.connectionsOpen = new Gauge({
      name: 'sasl_gate_connections_open',
      help: 'Client connections open now, per listener.',
      labelNames: ['listener'],
      registers: [registry],
    });
    this.connectionsTotal = new Counter({
      name: 'sasl_gate_connections_total',
      help: 'Client connections accepted, per listener.',
      labelNames: ['listener'],
      registers: [registry],
    });
    this.authentications = new Counter({
      name: 'sasl_gate_authentications_total',
      help: 'Authentication attempts by listener, mechanism, result, reason code and credential (token, app_password, password).',
      labelNames: ['listener', 'mechanism', 'result', 'reason', 'credential'],
      registers: [registry],
    });
    this.validationSeconds = new Histogram({
      name: 'sasl_gate_token_validation_seconds',
      help: 'Time one validation strategy took for a token that was not cached.',
      labelNames: ['strategy', 'verdict'],
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
      registers: [registry],
    });
    this.backendLoginSeconds = new Histogram({
      name: 'sasl_gate_backend_login_seconds',
      help: 'Time from the backend connect to its login reply.',
      labelNames: ['protocol', 'result'],
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
      registers: [registry],
    });
    this.bytesRelayed = new Counter({
      name: 'sasl_gate_relayed_bytes_total',
      help: 'Bytes relayed after login, per listener and direction (to_backend, to_client).',
      labelNames: ['listener', 'direction'],
      registers: [registry],
    });
    this.tlsHandshakeFailures = new Counter({
      name: 'sasl_gate_tls_handshake_failures_total',
      help: 'TLS handshakes that failed or timed out, per listener.',
      labelNames: ['listener'],
      registers: [registry],
    });
    this.refusals = new Counter({
      name: 'sasl_gate_refusals_total',
      help: 'Connections or sessions refused by a limit (total, per_address, auth_failures, commands, pre_auth_time, untrusted_proxy, bad_proxy_header).',
      labelNames: ['listener', 'limit'],
      registers: [registry],
    });
    const { breakerState, certificateExpiry, dependencies } = options;
    if (breakerState) {
      new Gauge({
        name: 'sasl_gate_provider_breaker_state',
        help: "The OpenID provider circuit breaker: 1 for its current state (closed, half_open, open), 0 for the others.",
        labelNames: ['state'],
        registers: [registry],
        // Merged over workers: a state is 1 when any worker's breaker is in it.
        aggregator: 'max',
        collect() {
          const now = breakerState();
          for (const state of ['closed', 'half-open', 'open'] as const) this.set({ state: state.replace('-', '_') }, now === state ? 1 : 0);
        },
      });
    }
    if (certificateExpiry) {
      new Gauge({
        name: 'sasl_gate_tls_certificate_expiry_timestamp_seconds',
        help: 'When the certificate served to new connections expires (its notAfter), in seconds since the Unix epoch.',
        registers: [registry],
        aggregator: 'min',
        collect() {
          const expiry = certificateExpiry();
          if (expiry) this.set(Math.floor(expiry.getTime() / 1000));
        },
      });
    }
    if (dependencies) {
      new Gauge({
        name: 'sasl_gate_dependency_up',
        help: 'Whether a dependency (imap, smtp, provider) answered its most recent probe or connection: 1 yes, 0 no; as /readyz reports it.',
        labelNames: ['dependency'],
        registers: [registry],
        // Merged over workers: up only when every worker sees it up.
        aggregator: 'min',
        collect() {
          this.reset();
          for (const { dependency, up } of dependencies()) this.set({ dependency }, up ? 1 : 0);
        },
      });
    }
    const cache = options.tokenCache;
    if (cache) {
      new Counter({
        name: 'sasl_gate_token_cache_lookups_total',
        help: 'Token cache lookups: hit, miss, or joined (waited for a validation already running).',
        labelNames: ['outcome'],
        registers: [registry],
        collect() {
          const stats = cache();
          this.reset();
          this.inc({ outcome: 'hit' }, stats.hits);
          this.inc({ outcome: 'miss' }, stats.misses);
          this.inc({ outcome: 'joined' }, stats.joined);
        },
      });
      new Gauge({
        name: 'sasl_gate_token_cache_entries',
        help: 'Validation results held in the token cache.',
        registers: [registry],
        collect() {
          this.set(cache().size);
        },
      });
    }
  }

  /** The text exposition for /metrics. */
  async render(): Promise<{ contentType: string; body: string }> {
    return { contentType: this.registry.contentType, body: await this.registry.metrics() };
  }
}
