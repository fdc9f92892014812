import { ConnectionLimiter, type Admission, type Refusal } from '../net/limits.js';
import { isClusterMessage, RequestClient, type Channel, type StartTimer } from './channel.js';

/**
 * A worker's {@link Admission}: the supervisor counts every worker's connections, so the total and
 * per-address limits hold for the instance. A supervisor that does not answer in time refuses.
 */
export class IpcAdmission implements Admission {
  private readonly client: RequestClient;

  constructor(
    private readonly channel: Channel,
    options: { timeoutMs?: number; startTimer?: StartTimer } = {},
  ) {
    this.client = new RequestClient(channel, options.timeoutMs ?? 2000, options.startTimer);
  }

  /** Asks the supervisor to admit a connection from `address`. */
  admit(address: string): Promise<Refusal | undefined> {
    // Refused on timeout; an admission that arrives after it is given back at once.
    return this.client.request<Refusal | undefined>({ saslGate: 'admit', address }, 'total', isVerdict, (late) => {
      if (late === null) this.release(address);
    }).then((verdict) => verdict ?? undefined);
  }

  /** Tells the supervisor a connection it admitted has closed. */
  release(address: string): void {
    this.channel.send({ saslGate: 'release', address });
  }
}

// An admission travels as null: JSON has no undefined.
function isVerdict(value: unknown): value is Refusal | undefined {
  return value === null || value === 'total' || value === 'per_address';
}

/**
 * The supervisor's connection counts for the whole instance, with what each worker holds, so the
 * connections of a worker that dies are released with it.
 */
export class InstanceLimits {
  private readonly limiter: ConnectionLimiter;
  private readonly held = new Map<string, Map<string, number>>();

  constructor(maxTotal: number, maxPerAddress: number) {
    this.limiter = new ConnectionLimiter(maxTotal, maxPerAddress);
  }

  /** Answers the admissions and releases of the worker `worker`; returns the unsubscribe. */
  serve(worker: string, channel: Channel): () => void {
    return channel.onMessage((message) => {
      // A throw here would end the supervisor, and every worker with it: a malformed request is dropped.
      if (!isClusterMessage(message) || !('address' in message) || typeof message.address !== 'string') return;
      if (message.saslGate === 'admit') {
        const verdict = this.admit(worker, message.address);
        if (!channel.send({ saslGate: 'answer', id: message.id, value: verdict ?? null }) && verdict === undefined) {
          this.release(worker, message.address);
        }
      } else if (message.saslGate === 'release') {
        this.release(worker, message.address);
      }
    });
  }

  /** Admits a connection for `worker`. */
  admit(worker: string, address: string): Refusal | undefined {
    const verdict = this.limiter.admit(address);
    if (verdict === undefined) {
      const addresses = this.held.get(worker) ?? new Map<string, number>();
      addresses.set(address, (addresses.get(address) ?? 0) + 1);
      this.held.set(worker, addresses);
    }
    return verdict;
  }

  /** Releases one of `worker`'s connections; one it does not hold is ignored. */
  release(worker: string, address: string): void {
    const addresses = this.held.get(worker);
    const count = addresses?.get(address) ?? 0;
    if (count === 0) return;
    if (count === 1) addresses!.delete(address);
    else addresses!.set(address, count - 1);
    this.limiter.release(address);
  }

  /** Releases everything `worker` held (it has exited). */
  forget(worker: string): void {
    const addresses = this.held.get(worker);
    this.held.delete(worker);
    for (const [address, count] of addresses ?? []) for (let i = 0; i < count; i++) this.limiter.release(address);
  }

  /** Connections open in the whole instance. */
  get open(): number {
    return this.limiter.open;
  }
}
