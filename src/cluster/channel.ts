/**
 * The message channel between the supervisor and one worker (node:cluster's IPC), and a small
 * request/answer layer over it. Messages are plain JSON objects tagged `saslGate`, so other users of
 * the same channel (node:cluster's own messages) pass by untouched.
 */

/** One end of an IPC channel: what the stores need, so tests can pass an in-process fake. */
export interface Channel {
  /**
   * Sends a message; false only when the channel is closed (the message is dropped). node's own
   * `send` also answers false when its queue is long, yet that message still arrives: a caller
   * that took it as dropped would undo an admission the other end goes on to use.
   */
  send(message: ClusterMessage): boolean;
  /** Calls `listener` for every message received; returns the function that stops it. */
  onMessage(listener: (message: unknown) => void): () => void;
}

/** Requests one end sends the other; each with an id is answered by an `answer` of the same id. */
export type Request =
  | { saslGate: 'failed'; id: number; address: string; user?: string | undefined }
  | { saslGate: 'succeeded'; address: string; user?: string | undefined }
  | { saslGate: 'admit'; id: number; address: string }
  /** From the supervisor: the worker's metrics and readiness, for `/metrics` and `/readyz`. */
  | { saslGate: 'report'; id: number };

/** Every message either end sends. */
export type ClusterMessage =
  | Request
  | { saslGate: 'answer'; id: number; value: unknown }
  | { saslGate: 'release'; address: string }
  | { saslGate: 'ready' }
  | { saslGate: 'directory'; state: unknown }
  | { saslGate: 'reload' }
  | { saslGate: 'stop'; now: boolean };

/** Whether `message` is one of ours (and so has a `saslGate` tag). */
export function isClusterMessage(message: unknown): message is ClusterMessage {
  return typeof message === 'object' && message !== null && typeof (message as { saslGate?: unknown }).saslGate === 'string';
}

/** Starts a timer; returns the function that cancels it. Injected so tests need no wall clock. */
export type StartTimer = (callback: () => void, ms: number) => () => void;

/** A timer that does not hold the process open. */
export const realTimer: StartTimer = (callback, ms) => {
  const timer = setTimeout(callback, ms);
  timer.unref();
  return () => clearTimeout(timer);
};

type RequestBody = Request extends infer R ? (R extends { id: number } ? Omit<R, 'id'> : never) : never;

/**
 * Request ids, counted over the whole process: several clients share one channel (a worker's
 * failure store and its admission), and each takes every answer whose id it waits for.
 */
let nextRequestId = 1;

/**
 * Sends requests over a channel and resolves each with its answer, or with `fallback` when the
 * channel is closed or no answer comes within `timeoutMs`: callers never see a rejection.
 */
export class RequestClient {
  private readonly pending = new Map<number, { resolve: (value: unknown) => void; cancel: () => void }>();

  constructor(
    private readonly channel: Channel,
    private readonly timeoutMs: number,
    private readonly startTimer: StartTimer = realTimer,
  ) {
    channel.onMessage((message) => {
      if (!isClusterMessage(message) || message.saslGate !== 'answer') return;
      const waiting = this.pending.get(message.id);
      if (!waiting) return;
      this.pending.delete(message.id);
      waiting.cancel();
      waiting.resolve(message.value);
    });
  }

  /**
   * Sends `body` and resolves with the answer, or `fallback` (closed channel, timeout). An answer
   * that comes after the timeout goes to `late`, when given (to undo what the fallback assumed).
   */
  request<T>(body: RequestBody, fallback: T, accept: (value: unknown) => value is T, late?: (value: unknown) => void): Promise<T> {
    const id = nextRequestId++;
    return new Promise<T>((resolve) => {
      const cancel = this.startTimer(() => {
        if (late) this.pending.set(id, { resolve: late, cancel: () => undefined });
        else this.pending.delete(id);
        resolve(fallback);
      }, this.timeoutMs);
      this.pending.set(id, { resolve: (value) => resolve(accept(value) ? value : fallback), cancel });
      if (!this.channel.send({ ...body, id } as Request)) {
        this.pending.delete(id);
        cancel();
        resolve(fallback);
      }
    });
  }

  /** Requests waiting for an answer now. */
  get waiting(): number {
    return this.pending.size;
  }
}

/** The channel of this worker process to its supervisor. */
export function processChannel(): Channel {
  return {
    send(message) {
      if (!process.send || !process.connected) return false;
      process.send(message);
      return true;
    },
    onMessage(listener) {
      process.on('message', listener);
      return () => process.off('message', listener);
    },
  };
}

/** The part of a node:cluster Worker a channel needs (a child process with IPC fits too). */
export interface IpcPeer {
  send(message: ClusterMessage): boolean;
  isConnected(): boolean;
  on(event: 'message', listener: (message: unknown) => void): unknown;
  off(event: 'message', listener: (message: unknown) => void): unknown;
}

/** The supervisor's channel to one worker. */
export function workerChannel(worker: IpcPeer): Channel {
  return {
    send(message) {
      if (!worker.isConnected()) return false;
      worker.send(message);
      return true;
    },
    onMessage(listener) {
      worker.on('message', listener);
      return () => worker.off('message', listener);
    },
  };
}
