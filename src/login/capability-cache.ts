import type { Logger } from 'pino';

/**
 * Keeps a backend's capabilities fresh: probed at start and then periodically, so what clients
 * are promised before login is what the backend offers after it. A failed probe keeps the last
 * known list (or a conservative fallback) and says so in the log.
 */
export class CapabilityCache {
  private backend: string[];
  private advertised: string[];
  private probed = false;
  private timer: NodeJS.Timeout | undefined;
  /** The probe in progress: a slow backend gets one probe at a time, not one per interval. */
  private inFlight: Promise<void> | undefined;

  constructor(
    private readonly options: {
      name: string;
      probe: () => Promise<string[]>;
      /** Turns the backend's list into what sasl-gate advertises. */
      advertise: (backend: readonly string[]) => string[];
      fallback: string[];
      refreshMs: number;
      log: Logger;
    },
  ) {
    this.backend = options.fallback;
    this.advertised = options.advertise(options.fallback);
  }

  /** The backend this cache describes (`imap`, `smtp`). */
  get name(): string {
    return this.options.name;
  }

  /** What to advertise to clients now. */
  current(): readonly string[] {
    return this.advertised;
  }

  /** The backend's own list, as last probed. */
  backendList(): readonly string[] {
    return this.backend;
  }

  /** Whether the backend's list has been seen at least once. */
  get isProbed(): boolean {
    return this.probed;
  }

  /** Probes once now, then keeps refreshing in the background. */
  async start(): Promise<void> {
    await this.refresh();
    this.timer = setInterval(() => void this.refresh(), this.options.refreshMs);
    this.timer.unref();
  }

  /** Stops refreshing. */
  stop(): void {
    if (this.timer) clearInterval(this.timer);
  }

  /** Probes now (or joins the probe in progress); on failure keeps the last known list and logs why. */
  refresh(): Promise<void> {
    this.inFlight ??= this.probeOnce().finally(() => (this.inFlight = undefined));
    return this.inFlight;
  }

  private async probeOnce(): Promise<void> {
    const { log, name } = this.options;
    try {
      const list = await this.options.probe();
      const changed = list.join(' ') !== this.backend.join(' ');
      this.backend = list;
      this.advertised = this.options.advertise(list);
      if (changed || !this.probed) log.info({ backend: name, capabilities: this.advertised.join(' ') }, 'backend capabilities probed');
      this.probed = true;
    } catch (err) {
      log.warn(
        { backend: name, err: (err as Error).message },
        this.probed
          ? 'backend capability probe failed; keeping the last list'
          : 'backend capability probe failed; advertising a minimal list until it answers',
      );
    }
  }
}
