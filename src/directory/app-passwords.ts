/** App passwords end with their user: when the directory disables or removes a user, all are revoked. */
import type { Logger } from 'pino';
import type { AppPasswordService } from '../auth/app-passwords.js';
import type { Directory, DirectoryEvent } from './directory.js';

/**
 * Revokes every app password of each user who stops being a mail user (a sync that drops or
 * disables them, a SCIM deactivate or delete), under the mailbox and every alias; returns the
 * unsubscribe. Login refusals do not wait for it: the directory's verdict already refuses them.
 */
export function revokeAppPasswordsOnDeparture(directory: Directory, service: AppPasswordService, log: Logger): () => void {
  return directory.subscribe((event: DirectoryEvent) => {
    if (event.type !== 'departed') return;
    const { user, how } = event;
    const names = [user.mailbox, ...user.aliases];
    void Promise.all(names.map((name) => service.revokeAll(name, 'directory'))).then(
      (counts) => {
        const revoked = counts.reduce((a, b) => a + b, 0);
        if (revoked > 0) log.info({ event: 'app_passwords_revoked', user: user.mailbox, how, revoked }, 'app passwords revoked: the user left the directory');
      },
      (err: Error) => log.error({ user: user.mailbox, err: err.message }, 'could not revoke the app passwords of a departed user (logins are refused by the directory anyway)'),
    );
  });
}
