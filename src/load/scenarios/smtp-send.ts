/** `smtp-send`: EHLO, AUTH, one message of `--size` bytes to the user itself (or `--rcpt`), QUIT. */
import { runTransactions } from '../engine.js';
import { messageFactory } from '../smtp.js';
import { openSmtp, stepClock, type Scenario } from './context.js';

export const smtpSend: Scenario = {
  name: 'smtp-send',
  protocol: 'smtp',
  async run(ctx) {
    const message = messageFactory(ctx.options.size);
    const runId = `${Date.now().toString(36)}.${process.pid}`;
    await runTransactions(ctx.plan, ctx.recorder, async (index) => {
      const lap = stepClock(ctx.recorder);
      const credential = ctx.credential(index);
      const smtp = await openSmtp(ctx, credential, lap);
      try {
        const to = ctx.options.rcpt ?? credential.user;
        await smtp.send(credential.user, to, message(credential.user, to, `${runId}.${index}`));
        lap('send');
      } catch (err) {
        smtp.wire.close();
        throw err;
      }
      await smtp.quit();
      lap('quit');
    });
    return {};
  },
};
