/** What a test reads from a Dovecot instance's own log: who logged in, and any word of the master user. */

interface DovecotLog {
  readLog(): Promise<string>;
}

/** The `Login:` lines of one of Dovecot's login services so far. */
export async function dovecotLogins(dovecot: DovecotLog, service: 'imap' | 'pop3' | 'managesieve'): Promise<string[]> {
  const login = new RegExp(`${service}-login: Info: Login: `);
  return (await dovecot.readLog()).split('\n').filter((l) => login.test(l));
}

/** Log lines, after the first `from` characters, that name the master user, other than idle disconnects. */
export async function masterMentions(dovecot: DovecotLog, masterUser: string, from = 0): Promise<string[]> {
  return (await dovecot.readLog())
    .slice(from)
    .split('\n')
    .filter((l) => l.includes(masterUser) && !/no auth attempts/.test(l));
}
