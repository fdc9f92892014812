import type { FailureStore } from '../login/failures.js';
import { isClusterMessage, RequestClient, type Channel, type StartTimer } from './channel.js';

/**
 * A worker's {@link FailureStore}: every failure and success is counted by the supervisor's one
 * tracker, so delays hold for the whole instance. When the supervisor cannot answer in time, a
 * failure gets the longest delay (an outage never lets a guesser through faster).
 */
export class IpcFailureStore implements FailureStore {
  private readonly client: RequestClient;

  constructor(
    private readonly channel: Channel,
    private readonly maxDelayMs: number,
    options: { timeoutMs?: number; startTimer?: StartTimer } = {},
  ) {
    this.client = new RequestClient(channel, options.timeoutMs ?? 2000, options.startTimer);
  }

  /** {@link FailureStore.failed}, counted by the supervisor. */
  failed(address: string, user?: string): Promise<number> {
    return this.client.request({ saslGate: 'failed', address, user }, this.maxDelayMs, isDelay);
  }

  /** {@link FailureStore.succeeded}, counted by the supervisor: one message, no answer to wait for. */
  succeeded(address: string, user?: string): Promise<void> {
    this.channel.send({ saslGate: 'succeeded', address, user });
    return Promise.resolve();
  }
}

function isDelay(value: unknown): value is number {
  return typeof value === 'number' && Number.isFinite(value) && value >= 0;
}

/** Answers one worker's failure requests from the supervisor's store (which never rejects); returns the unsubscribe. */
export function answerFailures(channel: Channel, store: FailureStore): () => void {
  return channel.onMessage((message) => {
    // A throw here would end the supervisor: a malformed request is dropped (the worker's wait ends in the longest delay).
    if (!isClusterMessage(message) || !('address' in message) || typeof message.address !== 'string') return;
    if (message.saslGate === 'failed') {
      void store.failed(message.address, optionalString(message.user)).then((delay) => channel.send({ saslGate: 'answer', id: message.id, value: delay }));
    } else if (message.saslGate === 'succeeded') {
      void store.succeeded(message.address, optionalString(message.user));
    }
  });
}

function optionalString(value: unknown): string | undefined {
  return typeof value === 'string' ? value : undefined;
}
