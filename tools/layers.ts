/** Prints the layers of `src/` (or of the tree given) and every import that runs up: `npm run layers`. */
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, importGraph } from './import-graph.js';

const root = process.argv[2] ?? join(dirname(fileURLToPath(import.meta.url)), '..', 'src');
process.stdout.write(`${describe(importGraph(root))}\n`);
