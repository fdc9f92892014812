/** `pop3-session`: what a POP3 client does on each poll: log in, STAT, LIST, QUIT. */
import { runTransactions } from '../engine.js';
import { openPop3, stepClock, type Scenario } from './context.js';

export const pop3Session: Scenario = {
  name: 'pop3-session',
  protocol: 'pop3',
  async run(ctx) {
    await runTransactions(ctx.plan, ctx.recorder, async (index) => {
      const lap = stepClock(ctx.recorder);
      const pop3 = await openPop3(ctx, ctx.credential(index), lap);
      try {
        await pop3.stat();
        lap('stat');
        await pop3.list();
        lap('list');
      } catch (err) {
        pop3.wire.close();
        throw err;
      }
      await pop3.quit();
      lap('quit');
    });
    return {};
  },
};
