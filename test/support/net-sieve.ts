/**
 * Drives PHP's Net_Sieve (Debian's php-net-sieve, the library Roundcube's managesieve plugin uses)
 * against sasl-gate, the way that plugin does for a user signed in with OAuth: connect, STARTTLS,
 * `AUTHENTICATE "XOAUTH2"` with `Bearer <token>` as the password, then script operations. Secrets go
 * through the environment, never argv.
 */
import { execFile } from 'node:child_process';

/** One Net_Sieve call after the login. */
export type NetSieveStep =
  | { op: 'installScript'; name: string; script: string; activate: boolean }
  | { op: 'listScripts' }
  | { op: 'getScript'; name: string }
  | { op: 'removeScript'; name: string };

/** What the session did: each step's result (or its error), and what the client learned. */
export interface NetSieveResult {
  connected: boolean;
  /** The error of connect() or login(), if either failed. */
  error?: string;
  /** Net_Sieve's view after the login (its own CAPABILITY command). */
  extensions?: string[];
  authMechanisms?: string[];
  steps: Array<{ ok: boolean; value?: unknown; error?: string }>;
  /** The commands the client sent, without their arguments (the login's carries the token). */
  commands: string[];
}

const SCRIPT = String.raw`
require_once 'Net/Sieve.php';
$cfg = json_decode(getenv('NET_SIEVE_CONFIG'), true);
$out = ['connected' => false, 'steps' => [], 'commands' => []];
$sieve = new Net_Sieve();
$sieve->setDebug(true, function ($s, $message) use (&$out) {
  if (preg_match('/^C: ([A-Z]+)/', $message, $m)) $out['commands'][] = $m[1];
});
$options = ['ssl' => ['cafile' => $cfg['cafile'], 'peer_name' => 'localhost', 'verify_peer' => true, 'verify_peer_name' => true]];
$res = $sieve->connect('127.0.0.1', $cfg['port'], $options, true);
if (is_a($res, 'PEAR_Error')) { $out['error'] = $res->getMessage(); echo json_encode($out); exit; }
$out['connected'] = true;
// Roundcube's OAuth login hands Net_Sieve "<token_type> <access_token>" as the password.
$res = $sieve->login($cfg['user'], 'Bearer ' . getenv('NET_SIEVE_TOKEN'), 'XOAUTH2');
if (is_a($res, 'PEAR_Error')) { $out['error'] = $res->getMessage(); echo json_encode($out); exit; }
$out['extensions'] = $sieve->getExtensions();
$out['authMechanisms'] = $sieve->getAuthMechs();
foreach ($cfg['steps'] as $step) {
  switch ($step['op']) {
    case 'installScript': $r = $sieve->installScript($step['name'], $step['script'], $step['activate']); break;
    case 'listScripts': $active = null; $r = $sieve->listScripts($active); if (!is_a($r, 'PEAR_Error')) $r = ['scripts' => $r, 'active' => $active]; break;
    case 'getScript': $r = $sieve->getScript($step['name']); break;
    case 'removeScript': $r = $sieve->removeScript($step['name']); break;
  }
  $out['steps'][] = is_a($r, 'PEAR_Error') ? ['ok' => false, 'error' => $r->getMessage()] : ['ok' => true, 'value' => $r];
}
$sieve->disconnect();
echo json_encode($out);
`;

/** Runs one Net_Sieve session against a ManageSieve listener with STARTTLS. */
export function netSieve(options: { port: number; cafile: string; user: string; token: string; steps: NetSieveStep[] }): Promise<NetSieveResult> {
  const config = JSON.stringify({ port: options.port, cafile: options.cafile, user: options.user, steps: options.steps });
  return new Promise((resolve, reject) => {
    execFile(
      'php',
      ['-d', 'display_errors=stderr', '-r', SCRIPT],
      { env: { ...process.env, NET_SIEVE_CONFIG: config, NET_SIEVE_TOKEN: options.token }, timeout: 60_000 },
      (err, stdout, stderr) => {
        if (err) return reject(new Error(`php Net_Sieve failed: ${stderr || err.message}`));
        try {
          resolve(JSON.parse(stdout) as NetSieveResult);
        } catch {
          reject(new Error(`php Net_Sieve printed no result: ${stdout.slice(0, 500)} ${stderr.slice(0, 500)}`));
        }
      },
    );
  });
}
