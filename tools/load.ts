/**
 * `npm run load -- SCENARIO ...`: `sasl-gate load` from the source checkout, where a missing
 * `--users` is made up for by the development OpenID provider (tools/load-tokens.ts).
 */
import { runLoad } from '../src/load/cli.js';
import { devTokenSource } from './load-tokens.js';

// The provider's keep-alive sockets must not hold the process once the report is out.
process.exit(await runLoad(process.argv.slice(2), { tokenSource: devTokenSource }));
