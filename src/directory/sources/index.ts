/**
 * The source named by the `directory` configuration section. The shape below mirrors that
 * section after validation, so the caller passes `config.directory` as it is.
 */
import { readSecret } from '../../config/secrets.js';
import { ConfigError } from '../../errors.js';
import type { DirectorySource } from '../model.js';
import { AuthentikSource } from './authentik.js';
import type { MailboxMapping, MailUserSelection } from './common.js';
import { KeycloakSource } from './keycloak.js';
import { StaticSource } from './static.js';

export { AuthentikSource } from './authentik.js';
export { DirectorySourceError, type MailboxMapping, type MailUserSelection } from './common.js';
export { KeycloakSource } from './keycloak.js';
export { StaticSource } from './static.js';

/** The `directory` section as far as the sources are concerned. */
export interface DirectorySourceConfig {
  source: 'static' | 'authentik' | 'keycloak' | 'scim';
  requestTimeoutSeconds: number;
  pageSize: number;
  mailboxFrom: 'email' | 'username';
  usernameDomain?: string | undefined;
  aliasAttribute?: string | undefined;
  select: { group?: string | undefined; attribute?: { name: string; value?: string | undefined } | undefined };
  static?: { file: string } | undefined;
  authentik?: { url: string; token?: string | undefined; tokenFile?: string | undefined } | undefined;
  keycloak?:
    | {
        url: string;
        realm: string;
        clientId: string;
        clientSecret?: string | undefined;
        clientSecretFile?: string | undefined;
        clientAuthMethod?: 'client_secret_basic' | 'client_secret_post' | undefined;
      }
    | undefined;
}

function secret(value: string | undefined, file: string | undefined, key: string): string {
  const found = readSecret(value, file, key);
  if (found === undefined) throw new ConfigError(key, `set ${key} or ${key}File`);
  return found;
}

/**
 * Builds the configured source; undefined for `scim`, whose users arrive by push and need no
 * polling. Secrets given as files are read here, once.
 */
export function createDirectorySource(
  config: DirectorySourceConfig,
  deps: { fetch?: typeof fetch } = {},
): DirectorySource | undefined {
  const selection: MailUserSelection = {};
  if (config.select.group !== undefined) selection.group = config.select.group;
  if (config.select.attribute !== undefined) {
    selection.attribute = { name: config.select.attribute.name };
    if (config.select.attribute.value !== undefined) selection.attribute.value = config.select.attribute.value;
  }
  const mailbox: MailboxMapping = { from: config.mailboxFrom };
  if (config.usernameDomain !== undefined) mailbox.domain = config.usernameDomain;
  const http = { timeoutMs: config.requestTimeoutSeconds * 1000, pageSize: config.pageSize, ...deps };
  const aliasAttribute = config.aliasAttribute;
  switch (config.source) {
    case 'scim':
      return undefined;
    case 'static': {
      if (!config.static) throw new ConfigError('directory.static', 'directory.source is static: set directory.static.file');
      return new StaticSource({ file: config.static.file, selection });
    }
    case 'authentik': {
      const a = config.authentik;
      if (!a) throw new ConfigError('directory.authentik', 'directory.source is authentik: set directory.authentik.url and token');
      return new AuthentikSource({
        ...http,
        url: a.url,
        token: secret(a.token, a.tokenFile, 'directory.authentik.token'),
        mailbox,
        selection,
        ...(aliasAttribute === undefined ? {} : { aliasAttribute }),
      });
    }
    case 'keycloak': {
      const k = config.keycloak;
      if (!k) throw new ConfigError('directory.keycloak', 'directory.source is keycloak: set directory.keycloak.url, realm, clientId and clientSecret');
      return new KeycloakSource({
        ...http,
        url: k.url,
        realm: k.realm,
        clientId: k.clientId,
        clientSecret: secret(k.clientSecret, k.clientSecretFile, 'directory.keycloak.clientSecret'),
        clientAuthMethod: k.clientAuthMethod ?? 'client_secret_basic',
        mailbox,
        selection,
        ...(aliasAttribute === undefined ? {} : { aliasAttribute }),
      });
    }
  }
}
