/** `imap-login`: connect, authenticate, LOGOUT. One transaction per login. */
import { runTransactions } from '../engine.js';
import { openImap, stepClock, type Scenario } from './context.js';

export const imapLogin: Scenario = {
  name: 'imap-login',
  protocol: 'imap',
  async run(ctx) {
    await runTransactions(ctx.plan, ctx.recorder, async (index) => {
      const lap = stepClock(ctx.recorder);
      const imap = await openImap(ctx, ctx.credential(index), lap);
      await imap.logout();
      lap('logout');
    });
    return {};
  },
};
