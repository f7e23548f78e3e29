// The chat-server API: fetch pages, post messages, add and remove
// reactions. Errors carry the server's problem+json words.

import type { ApiMessage, Page } from './model';

export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly title: string,
    readonly detail: string,
    /** Seconds to wait, from `Retry-After` (429 and 503). */
    readonly retryAfter: number | null,
  ) {
    super(`${title}: ${detail}`);
  }
}

/** The token sent with every call, when the server wants one. */
let bearer: string | null = null;

export function setToken(token: string | null): void {
  bearer = token;
}

async function call<T>(path: string, init?: RequestInit): Promise<T> {
  let response: Response;
  const headers = new Headers(init?.headers);
  if (bearer) headers.set('authorization', `Bearer ${bearer}`);
  try {
    response = await fetch(path, { ...init, headers });
  } catch (error) {
    throw new ApiError(0, 'Cannot reach the server', String(error), null);
  }
  if (response.ok) return (await response.json()) as T;
  const retry = Number(response.headers.get('retry-after'));
  let title = `${response.status} ${response.statusText}`;
  let detail = '';
  try {
    const problem = (await response.json()) as { title?: string; detail?: string };
    title = problem.title ?? title;
    detail = problem.detail ?? '';
  } catch {
    // Not problem+json: the status says it all.
  }
  throw new ApiError(response.status, title, detail, Number.isFinite(retry) && retry > 0 ? retry : null);
}

const chat = (chatId: string) => `/api/chats/${encodeURIComponent(chatId)}`;

/** Regular expressions ids must match, as the server checks them. */
export interface Patterns {
  chatId: string;
  userId: string;
}

export interface UiConfig {
  streamUrl: string;
  /** The server wants a token. */
  auth: boolean;
  /** It gives development tokens to whoever asks. */
  devTokens: boolean;
  /** The longest message text the server takes, in characters. */
  maxTextChars: number;
  patterns: Patterns;
}

export function fetchConfig(): Promise<UiConfig> {
  return call('/api/config');
}

export interface Token {
  token: string;
  /** Unix seconds. */
  expiresAt: number;
  /** The user the token speaks for (its `sub`). */
  userId: string;
}

/**
 * What a pasted token says of its user and expiry (its payload, unverified:
 * the server checks the signature). Null for anything that is not a JWT
 * with a `sub`.
 */
export function readToken(token: string): Token | null {
  const payload = token.split('.')[1];
  if (!payload) return null;
  try {
    const base64 = payload.replace(/-/g, '+').replace(/_/g, '/');
    const bytes = Uint8Array.from(atob(base64), (c) => c.charCodeAt(0));
    const claims = JSON.parse(new TextDecoder().decode(bytes)) as { sub?: unknown; exp?: unknown };
    if (typeof claims.sub !== 'string' || claims.sub === '') return null;
    const expiresAt = typeof claims.exp === 'number' ? claims.exp : Number.MAX_SAFE_INTEGER;
    return { token, expiresAt, userId: claims.sub };
  } catch {
    return null;
  }
}

/** The query or body field naming the user: none where a token says who. */
const named = (userId: string | null): Record<string, string> => (userId === null ? {} : { userId });

/** A development token for `userId` (servers started with --dev-tokens). */
export function devToken(userId: string): Promise<Token> {
  return call('/api/dev/token', {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ userId }),
  });
}

/** `userId` null: the token's user (authentication on). */
export function fetchPage(
  chatId: string,
  userId: string | null,
  where: { before?: string; after?: string } = {},
  limit = 50,
): Promise<Page> {
  const query = new URLSearchParams({ limit: String(limit), ...named(userId) });
  if (where.before) query.set('before', where.before);
  if (where.after) query.set('after', where.after);
  return call(`${chat(chatId)}/messages?${query}`);
}

const json = (body: unknown): RequestInit => ({
  method: 'POST',
  headers: { 'content-type': 'application/json' },
  body: JSON.stringify(body),
});

export function postMessage(
  chatId: string,
  userId: string | null,
  text: string,
  clientMessageId: string,
): Promise<ApiMessage> {
  return call(`${chat(chatId)}/messages`, json({ ...named(userId), text, clientMessageId }));
}

export function addReaction(chatId: string, messageId: string, userId: string | null, emoji: string): Promise<unknown> {
  return call(`${chat(chatId)}/messages/${messageId}/reactions`, json({ ...named(userId), emoji }));
}

export function removeReaction(chatId: string, messageId: string, userId: string | null, emoji: string): Promise<unknown> {
  const query = new URLSearchParams(named(userId));
  return call(`${chat(chatId)}/messages/${messageId}/reactions/${encodeURIComponent(emoji)}?${query}`, {
    method: 'DELETE',
  });
}
