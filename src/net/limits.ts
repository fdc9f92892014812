import { clientAddressKey } from './networks.js';

/** The limit that refuses a connection. */
export type Refusal = 'total' | 'per_address';

/**
 * What the listeners ask before serving a connection: this process's counts, or counts for the
 * whole instance kept in another process (then the answer comes later).
 */
export interface Admission {
  /** Admits a connection, or says which limit refuses it. */
  admit(address: string): Refusal | undefined | Promise<Refusal | undefined>;
  /** Forgets a connection that was admitted. */
  release(address: string): void;
}

/**
 * Counts open connections in total and per client address, so one address (a scanner, a
 * broken client in a loop) cannot take every connection. IPv6 clients count by their /64, as
 * the failure delays do: one host or home usually holds a whole /64 and could otherwise open
 * the per-address limit from each of its addresses. Memory is bounded by the number of open
 * connections: an address leaves the table with its last connection.
 */
export class ConnectionLimiter implements Admission {
  private total = 0;
  private readonly perAddress = new Map<string, number>();

  constructor(
    private readonly maxTotal: number,
    private readonly maxPerAddress: number,
  ) {}

  /** Admits a connection, or says which limit refuses it. */
  admit(address: string): Refusal | undefined {
    if (this.total >= this.maxTotal) return 'total';
    const key = clientAddressKey(address);
    const current = this.perAddress.get(key) ?? 0;
    if (current >= this.maxPerAddress) return 'per_address';
    this.total += 1;
    this.perAddress.set(key, current + 1);
    return undefined;
  }

  /** Forgets a connection that was admitted. */
  release(address: string): void {
    this.total -= 1;
    const key = clientAddressKey(address);
    const current = this.perAddress.get(key) ?? 0;
    if (current <= 1) this.perAddress.delete(key);
    else this.perAddress.set(key, current - 1);
  }

  /** Open connections now. */
  get open(): number {
    return this.total;
  }
}
