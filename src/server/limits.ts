/**
 * Counts open connections in total and per client address, so one address (a scanner, a
 * broken client in a loop) cannot take every connection. Memory is bounded by the number of
 * open connections: an address leaves the table with its last connection.
 */
export class ConnectionLimiter {
  private total = 0;
  private readonly perAddress = new Map<string, number>();

  constructor(
    private readonly maxTotal: number,
    private readonly maxPerAddress: number,
  ) {}

  /** Admits a connection, or says which limit refuses it. */
  admit(address: string): 'total' | 'per_address' | undefined {
    if (this.total >= this.maxTotal) return 'total';
    const current = this.perAddress.get(address) ?? 0;
    if (current >= this.maxPerAddress) return 'per_address';
    this.total += 1;
    this.perAddress.set(address, current + 1);
    return undefined;
  }

  /** Forgets a connection that was admitted. */
  release(address: string): void {
    this.total -= 1;
    const current = this.perAddress.get(address) ?? 0;
    if (current <= 1) this.perAddress.delete(address);
    else this.perAddress.set(address, current - 1);
  }

  /** Open connections now. */
  get open(): number {
    return this.total;
  }
}
