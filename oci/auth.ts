/**
 * How an OCI registry wants a client to authenticate, read from its `WWW-Authenticate`
 * challenge (the distribution spec's token flow): `Basic realm=…` asks for the user name and
 * password on every request; `Bearer realm=…,service=…,scope=…` sends the client to a token
 * service for a short-lived token that grants the scope. Pure: no I/O.
 */

export interface Challenge {
  scheme: string;
  params: Record<string, string>;
}

/**
 * Parses a `WWW-Authenticate` value (one or several challenges): a scheme, then auth-params
 * `key=token` or `key="quoted string"` separated by commas; a bare token starts the next challenge.
 */
export function parseChallenges(header: string | string[] | undefined): Challenge[] {
  const values = Array.isArray(header) ? header : header ? [header] : [];
  const challenges: Challenge[] = [];
  for (const value of values) {
    let i = 0;
    const skip = (chars: RegExp) => {
      while (i < value.length && chars.test(value[i])) i++;
    };
    const word = () => {
      const start = i;
      skip(/[A-Za-z0-9!#$%&'*+.^_`|~-]/);
      return value.slice(start, i);
    };
    let current: Challenge | undefined;
    while (i < value.length) {
      skip(/[\s,]/);
      const name = word();
      if (!name) break;
      skip(/\s/);
      if (value[i] !== '=') {
        current = { scheme: name.toLowerCase(), params: {} };
        challenges.push(current);
        continue;
      }
      i++;
      skip(/\s/);
      let param = '';
      if (value[i] === '"') {
        for (i++; i < value.length && value[i] !== '"'; i++) param += value[i] === '\\' ? (value[++i] ?? '') : value[i];
        i++;
      } else {
        const start = i;
        skip(/[^,\s]/);
        param = value.slice(start, i);
      }
      if (current) current.params[name.toLowerCase()] = param;
    }
  }
  return challenges;
}

/** The scope a pull of `repository` needs (`repository:<name>:pull`). */
export function pullScope(repository: string): string {
  return `repository:${repository}:pull`;
}

/** The token service's answer: `token` (distribution) or `access_token` (OAuth2 form); Harbor gives both. */
export function tokenFromResponse(body: unknown): { token: string; expiresInS: number } | undefined {
  if (body === null || typeof body !== 'object') return undefined;
  const record = body as Record<string, unknown>;
  const token =
    typeof record.token === 'string' && record.token
      ? record.token
      : typeof record.access_token === 'string'
        ? record.access_token
        : '';
  if (!token) return undefined;
  const expires = typeof record.expires_in === 'number' && record.expires_in > 0 ? record.expires_in : 60;
  return { token, expiresInS: expires };
}
