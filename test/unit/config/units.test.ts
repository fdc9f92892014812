/**
 * Durations in one unit: the failure delays are read in seconds (fractions allowed); the
 * millisecond keys of older configurations still load, with a warning naming the new key, and the
 * program sees seconds either way.
 */
import { describe, expect, it } from 'vitest';
import { effectiveYaml } from '../../../src/config/effective.js';
import { loadConfig } from '../../../src/config/load.js';
import { InvalidConfigError } from '../../../src/config/problems.js';
import { configKeys } from '../../../src/config/reference.js';
import { configFile, MINIMAL_CONFIG } from './config-files.js';

const load = (limits: string, env: NodeJS.ProcessEnv = {}) => loadConfig({ file: configFile(`${MINIMAL_CONFIG}${limits}`), env });

describe('limits.authFailureDelaySeconds', () => {
  it('defaults to half a second, growing to at most 15 seconds', () => {
    const { config, warnings } = load('');
    expect(config.limits).toMatchObject({ authFailureDelaySeconds: 0.5, authFailureMaxDelaySeconds: 15 });
    expect(config.limits).not.toHaveProperty('authFailureDelayMs');
    expect(warnings.filter((w) => w.includes('deprecated'))).toEqual([]);
  });

  it('takes fractions, from the file and from the environment', () => {
    expect(load('limits: { authFailureDelaySeconds: 0.25, authFailureMaxDelaySeconds: 2 }\n').config.limits).toMatchObject({
      authFailureDelaySeconds: 0.25,
      authFailureMaxDelaySeconds: 2,
    });
    expect(load('', { SASL_GATE_LIMITS__AUTH_FAILURE_DELAY_SECONDS: '0.1' }).config.limits.authFailureDelaySeconds).toBe(0.1);
  });

  it('refuses a negative or too long delay, naming the key', () => {
    for (const limits of ['limits: { authFailureDelaySeconds: -1 }\n', 'limits: { authFailureMaxDelaySeconds: 301 }\n']) {
      expect(() => load(limits)).toThrow(InvalidConfigError);
    }
    try {
      load('limits: { authFailureDelaySeconds: "soon" }\n');
      expect.unreachable();
    } catch (err) {
      const problem = (err as InvalidConfigError).problems[0]!;
      expect(problem.key).toBe('limits.authFailureDelaySeconds');
      expect(problem.message).toMatch(/^expected a number, 0 to 60, got "soon"/);
    }
  });
});

describe('the deprecated millisecond keys', () => {
  it('still load, as seconds, with a warning that names the new key and its value', () => {
    const { config, warnings } = load('limits: { authFailureDelayMs: 200, authFailureMaxDelayMs: 800 }\n');
    expect(config.limits).toMatchObject({ authFailureDelaySeconds: 0.2, authFailureMaxDelaySeconds: 0.8 });
    expect(config.limits).not.toHaveProperty('authFailureDelayMs');
    expect(warnings).toContain('limits.authFailureDelayMs is deprecated: write limits.authFailureDelaySeconds: 0.2 instead');
    expect(warnings).toContain('limits.authFailureMaxDelayMs is deprecated: write limits.authFailureMaxDelaySeconds: 0.8 instead');
  });

  it('from the environment too, naming the variable to use instead', () => {
    const { config, warnings } = load('', { SASL_GATE_LIMITS__AUTH_FAILURE_DELAY_MS: '0' });
    expect(config.limits.authFailureDelaySeconds).toBe(0);
    expect(warnings).toContain(
      'limits.authFailureDelayMs is deprecated: write limits.authFailureDelaySeconds: 0 instead (from SASL_GATE_LIMITS__AUTH_FAILURE_DELAY_MS, now SASL_GATE_LIMITS__AUTH_FAILURE_DELAY_SECONDS)',
    );
  });

  it('may not be set together with their replacement', () => {
    try {
      load('limits: { authFailureDelayMs: 200, authFailureDelaySeconds: 0.2 }\n');
      expect.unreachable();
    } catch (err) {
      expect(err).toBeInstanceOf(InvalidConfigError);
      expect((err as InvalidConfigError).problems).toEqual([
        { key: 'limits.authFailureDelayMs', message: 'limits.authFailureDelayMs is deprecated and limits.authFailureDelaySeconds is set too: the delay must be given once, in seconds' },
      ]);
    }
  });

  it('are written as seconds by check-config, and what it prints loads again without a warning', () => {
    const loaded = load('limits: { authFailureDelayMs: 250 }\n');
    const text = effectiveYaml(loaded.config, loaded.fromEnv);
    expect(text).toContain('authFailureDelaySeconds: 0.25');
    expect(text).not.toContain('authFailureDelayMs');
    const again = loadConfig({ file: configFile(text), env: {} });
    expect(again.config.limits.authFailureDelaySeconds).toBe(0.25);
    expect(again.warnings.filter((w) => w.includes('deprecated'))).toEqual([]);
  });
});

describe('every duration key', () => {
  it('is in seconds, but for the two deprecated ones', () => {
    const durations = configKeys()
      .map((k) => k.key)
      .filter((key) => /(Seconds|Ms|Millis|Minutes|Timeout|Delay|Interval)$/.test(key));
    expect(durations.filter((key) => !key.endsWith('Seconds'))).toEqual(['limits.authFailureDelayMs', 'limits.authFailureMaxDelayMs']);
    expect(durations.length).toBeGreaterThan(20);
  });
});
