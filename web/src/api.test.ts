import { describe, expect, it } from 'vitest';
import { readToken } from './api';

const b64url = (value: unknown) =>
  btoa(String.fromCharCode(...new TextEncoder().encode(JSON.stringify(value))))
    .replace(/\+/g, '-')
    .replace(/\//g, '_')
    .replace(/=+$/, '');
const jwt = (claims: unknown) => `${b64url({ alg: 'HS256', typ: 'JWT' })}.${b64url(claims)}.signature`;

describe('a pasted token', () => {
  it('names its user and expiry from its payload', () => {
    const token = jwt({ sub: 'dora', exp: 1_900_000_000 });
    expect(readToken(token)).toEqual({ token, userId: 'dora', expiresAt: 1_900_000_000 });
  });

  it('reads a payload in base64url with non-ASCII text', () => {
    const token = jwt({ sub: 'zoë~?>', exp: 1 });
    expect(readToken(token)?.userId).toBe('zoë~?>');
  });

  it('is refused when it is not a JWT with a sub', () => {
    for (const bad of ['', 'abc', 'a.b.c', jwt({ exp: 1 }), jwt({ sub: 7 }), jwt({ sub: '' })]) {
      expect(readToken(bad)).toBeNull();
    }
  });
});
