import { Transform, type TransformCallback } from 'node:stream';

/**
 * Commands a client must never reach the backend with after login: they are how sasl-gate
 * itself tells Postfix who the client is. Postfix offers them to sasl-gate's address, so a
 * client relayed from there could otherwise log in again as anyone (`XCLIENT LOGIN=bob`).
 */
const RESERVED = /^(XCLIENT|XFORWARD)(?=[ \r\n]|$)/i;
/** Postfix answers an unknown verb with `502 5.5.2`, in order, like any other command. */
const REFUSED_VERB = 'X-REFUSED-BY-SASL-GATE';
const MAX_COMMAND_LINE = 64 * 1024;
const END_OF_DATA = Buffer.from('\r\n.\r\n');

type Mode =
  | { kind: 'command' }
  /** DATA was sent: whether message content follows depends on the backend's 354. */
  | { kind: 'awaiting-data-reply'; replyNumber: number }
  | { kind: 'data' }
  | { kind: 'chunk'; remaining: number };

/**
 * Follows an SMTP session after login, client to backend, just enough to tell commands from
 * message content (DATA until the lone dot, BDAT by its byte count), and rewrites the verb of
 * reserved commands so the backend refuses them. Everything else passes untouched. The
 * backend's replies are counted (`observeReplies`) to learn whether DATA was accepted.
 */
export class SmtpCommandGuard extends Transform {
  private mode: Mode = { kind: 'command' };
  private pending: Buffer = Buffer.alloc(0);
  private commandsSent = 0;
  private repliesSeen = 0;
  private replyBuffer = '';
  /** Within an over-long line that has already been checked and forwarded. */
  private insideLongLine = false;
  /** The last bytes of message content, to find an end marker split across chunks. */
  private dataTail: Buffer = Buffer.from('\r\n');
  /** Reserved commands refused, for the log. */
  refused = 0;

  /** Feeds bytes the backend sent to the client, to count its replies. */
  observeReplies(chunk: Buffer): void {
    this.replyBuffer += chunk.toString('latin1');
    let end: number;
    while ((end = this.replyBuffer.indexOf('\n')) >= 0) {
      const line = this.replyBuffer.slice(0, end);
      this.replyBuffer = this.replyBuffer.slice(end + 1);
      if (!/^\d{3}(?: |\r?$)/.test(line)) continue;
      this.repliesSeen += 1;
      if (this.mode.kind === 'awaiting-data-reply' && this.repliesSeen === this.mode.replyNumber) {
        this.mode = line.startsWith('354') ? { kind: 'data' } : { kind: 'command' };
        this.dataTail = Buffer.from('\r\n');
        this.process();
      }
    }
    if (this.replyBuffer.length > MAX_COMMAND_LINE) this.replyBuffer = this.replyBuffer.slice(-16);
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.pending = this.pending.length === 0 ? chunk : Buffer.concat([this.pending, chunk]);
    this.process();
    callback();
  }

  override _flush(callback: TransformCallback): void {
    if (this.pending.length > 0 && this.mode.kind !== 'awaiting-data-reply') this.push(this.pending);
    this.pending = Buffer.alloc(0);
    callback();
  }

  private process(): void {
    while (this.pending.length > 0) {
      switch (this.mode.kind) {
        case 'awaiting-data-reply':
          // Held back until the backend says whether what follows is content or commands.
          return;
        case 'chunk': {
          const n = Math.min(this.mode.remaining, this.pending.length);
          this.forward(n);
          this.mode = this.mode.remaining - n > 0 ? { kind: 'chunk', remaining: this.mode.remaining - n } : { kind: 'command' };
          break;
        }
        case 'data': {
          const search = Buffer.concat([this.dataTail, this.pending.subarray(0, Math.min(this.pending.length, 1 << 20))]);
          const at = search.indexOf(END_OF_DATA);
          if (at >= 0) {
            const endInPending = at + END_OF_DATA.length - this.dataTail.length;
            this.forward(endInPending);
            this.mode = { kind: 'command' };
          } else {
            const n = Math.min(this.pending.length, 1 << 20);
            this.dataTail = Buffer.from(search.subarray(Math.max(0, search.length - 4)));
            this.forward(n);
          }
          break;
        }
        case 'command': {
          const end = this.pending.indexOf(0x0a);
          if (this.insideLongLine) {
            this.forward(end < 0 ? this.pending.length : end + 1);
            if (end >= 0) this.insideLongLine = false;
            break;
          }
          if (end < 0) {
            if (this.pending.length <= MAX_COMMAND_LINE) return;
            // No line is this long in SMTP; check its start and let the backend judge the rest.
            this.checkCommand(this.pending.subarray(0, 64).toString('latin1'));
            this.insideLongLine = true;
            break;
          }
          this.command(end + 1);
          break;
        }
      }
    }
  }

  private command(length: number): void {
    const line = this.pending.subarray(0, length).toString('latin1');
    this.commandsSent += 1;
    if (RESERVED.test(line)) {
      this.refused += 1;
      this.pending = this.pending.subarray(length);
      this.push(Buffer.from(line.replace(RESERVED, REFUSED_VERB), 'latin1'));
      return;
    }
    this.forward(length);
    const bdat = /^BDAT +(\d{1,15})(?: +LAST)? *\r?\n$/i.exec(line);
    if (bdat) this.mode = { kind: 'chunk', remaining: Number(bdat[1]) };
    else if (/^DATA *\r?\n$/i.test(line)) this.mode = { kind: 'awaiting-data-reply', replyNumber: this.commandsSent };
  }

  private checkCommand(start: string): void {
    this.commandsSent += 1;
    if (RESERVED.test(start)) {
      this.refused += 1;
      this.pending = Buffer.concat([Buffer.from(start.replace(RESERVED, REFUSED_VERB), 'latin1'), this.pending.subarray(start.length)]);
    }
  }

  private forward(n: number): void {
    if (n <= 0) return;
    this.push(this.pending.subarray(0, n));
    this.pending = this.pending.subarray(n);
  }
}
