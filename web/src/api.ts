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
}

/** A development token for `userId` (servers started with --dev-tokens). */
export function devToken(userId: string): Promise<Token> {
  return call('/api/dev/token', {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ userId }),
  });
}

export function fetchPage(
  chatId: string,
  userId: string,
  where: { before?: string; after?: string } = {},
  limit = 50,
): Promise<Page> {
  const query = new URLSearchParams({ limit: String(limit), userId });
  if (where.before) query.set('before', where.before);
  if (where.after) query.set('after', where.after);
  return call(`${chat(chatId)}/messages?${query}`);
}

const json = (body: unknown): RequestInit => ({
  method: 'POST',
  headers: { 'content-type': 'application/json' },
  body: JSON.stringify(body),
});

export function postMessage(chatId: string, userId: string, text: string, clientMessageId: string): Promise<ApiMessage> {
  return call(`${chat(chatId)}/messages`, json({ userId, text, clientMessageId }));
}

export function addReaction(chatId: string, messageId: string, userId: string, emoji: string): Promise<unknown> {
  return call(`${chat(chatId)}/messages/${messageId}/reactions`, json({ userId, emoji }));
}

export function removeReaction(chatId: string, messageId: string, userId: string, emoji: string): Promise<unknown> {
  const query = new URLSearchParams({ userId });
  return call(`${chat(chatId)}/messages/${messageId}/reactions/${encodeURIComponent(emoji)}?${query}`, {
    method: 'DELETE',
  });
}
