/**
 * The operator's monitoring in examples/monitoring/: every metric the Grafana dashboard and the
 * Prometheus alert rules use exists in the /metrics of a running sasl-gate, the new gauges say
 * what is true (breaker closed, the certificate's real expiry, the backend up), and promtool
 * accepts the rules, their unit tests and the dashboard's queries.
 */
import { execFile } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse, stringify } from 'yaml';
import { startStack, tokenLogin, USERS, type Stack } from '../support/stack.js';

const run = promisify(execFile);
const DIR = join(process.cwd(), 'examples', 'monitoring');
const PROMTOOL = ['/usr/bin/promtool', '/usr/local/bin/promtool'].find((path) => existsSync(path));
/** CI installs promtool (Debian's `prometheus`); elsewhere its checks are skipped, saying so. */
const PROMTOOL_MISSING = PROMTOOL === undefined && !process.env.CI;

interface Rule {
  alert: string;
  expr: string;
}
const rules = (parse(readFileSync(join(DIR, 'alerts.yml'), 'utf8')) as { groups: Array<{ rules: Rule[] }> }).groups.flatMap((g) => g.rules);
const dashboard = JSON.parse(readFileSync(join(DIR, 'grafana-dashboard.json'), 'utf8')) as {
  panels: Array<{ title: string; targets?: Array<{ expr: string }> }>;
  templating: { list: Array<{ definition?: string }> };
};
const dashboardQueries = [
  ...dashboard.panels.flatMap((p) => (p.targets ?? []).map((t) => ({ where: `panel "${p.title}"`, expr: t.expr }))),
  ...dashboard.templating.list.flatMap((v) => (v.definition ? [{ where: 'variable', expr: v.definition }] : [])),
];

/** Metric names in a PromQL expression (sasl-gate's own, plus Prometheus' `up`). */
function metricNames(expr: string): string[] {
  return [...expr.matchAll(/\b(sasl_gate_[a-z0-9_]+|up(?=\{))\b/g)].map((m) => m[1]!);
}

let stack: Stack;
let exposition: string;

beforeAll(async () => {
  stack = await startStack({ config: { admin: { bind: '127.0.0.1:0' } } });
  const token = await stack.idp.mintAccessToken({ user: USERS[0]!.name });
  expect((await tokenLogin(stack, USERS[0]!.name, token)).tagged).toMatch(/^a1 OK/);
  exposition = await (await fetch(`http://127.0.0.1:${stack.gate.admin!.port}/metrics`)).text();
});

afterAll(async () => {
  await stack?.close();
});

describe('examples/monitoring', () => {
  it('uses only metrics that a running sasl-gate exposes', () => {
    const types = new Map([...exposition.matchAll(/^# TYPE (\S+) (\S+)$/gm)].map((m) => [m[1]!, m[2]!]));
    const exists = (name: string) => {
      if (name === 'up') return true; // Prometheus' own series for every scrape target.
      if (types.has(name)) return true;
      const histogram = /^(.*)_(bucket|sum|count)$/.exec(name);
      return histogram !== null && types.get(histogram[1]!) === 'histogram';
    };
    const used = [...rules.map((r) => ({ where: `alert ${r.alert}`, expr: r.expr })), ...dashboardQueries];
    const missing = used.flatMap(({ where, expr }) => metricNames(expr).filter((n) => !exists(n)).map((n) => `${n} (${where})`));
    expect(missing).toEqual([]);
    const names = new Set(used.flatMap(({ expr }) => metricNames(expr)));
    // What operators were promised: logins and failures by reason, provider and backend latency,
    // breaker state, connections and refusals by limit, certificate expiry.
    for (const name of [
      'sasl_gate_authentications_total',
      'sasl_gate_token_validation_seconds_bucket',
      'sasl_gate_backend_login_seconds_bucket',
      'sasl_gate_provider_breaker_state',
      'sasl_gate_connections_open',
      'sasl_gate_refusals_total',
      'sasl_gate_tls_certificate_expiry_timestamp_seconds',
      'sasl_gate_dependency_up',
    ]) {
      expect(names).toContain(name);
    }
    expect(dashboardQueries.length).toBeGreaterThanOrEqual(15);
  });

  it('exposes the breaker state, the certificate expiry and the dependencies as they are', () => {
    expect(exposition).toMatch(/^sasl_gate_provider_breaker_state\{state="closed"\} 1$/m);
    expect(exposition).toMatch(/^sasl_gate_provider_breaker_state\{state="open"\} 0$/m);
    const notAfter = Math.floor(new Date(new X509Certificate(readFileSync(stack.tlsPaths.cert)).validTo).getTime() / 1000);
    expect(exposition).toContain(`\nsasl_gate_tls_certificate_expiry_timestamp_seconds ${notAfter}\n`);
    expect(exposition).toMatch(/^sasl_gate_dependency_up\{dependency="imap"\} 1$/m);
    expect(exposition).toMatch(/^sasl_gate_dependency_up\{dependency="provider"\} 1$/m);
  });

  it.skipIf(PROMTOOL_MISSING)(
    `passes promtool: the rules, their unit tests and the dashboard's queries${PROMTOOL_MISSING ? ' (skipped: promtool is not installed; apt-get install prometheus)' : ''}`,
    async () => {
      expect(PROMTOOL, 'promtool is required in CI (Debian package prometheus)').toBeDefined();
      const checked = await run(PROMTOOL!, ['check', 'rules', 'alerts.yml'], { cwd: DIR });
      expect(checked.stdout).toContain(`SUCCESS: ${rules.length} rules found`);
      const tested = await run(PROMTOOL!, ['test', 'rules', 'alerts.test.yml'], { cwd: DIR });
      expect(tested.stdout).toContain('SUCCESS');
      // The dashboard's queries as recording rules, with Grafana's variables filled in: promtool parses each.
      const dir = mkdtempSync(join(tmpdir(), 'sasl-gate-dashboard-'));
      const recording = {
        groups: [
          {
            name: 'dashboard',
            rules: dashboardQueries
              .filter(({ where }) => where !== 'variable')
              .map(({ expr }, i) => ({
                record: `dashboard:query_${i}`,
                expr: expr.replaceAll('$__rate_interval', '5m').replaceAll('$instance', '.*'),
              })),
          },
        ],
      };
      writeFileSync(join(dir, 'dashboard.yml'), stringify(recording));
      const queries = await run(PROMTOOL!, ['check', 'rules', join(dir, 'dashboard.yml')]);
      expect(queries.stdout).toContain(`SUCCESS: ${recording.groups[0]!.rules.length} rules found`);
    },
  );
});
