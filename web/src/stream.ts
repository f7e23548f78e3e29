// The joined chats' live events over one EventSource: named events decoded
// into actions, and the connection's state as a person should see it.

import type { ApiMessage, ReactionEvent, ReactionsEvent } from './model';

export type Status = 'connecting' | 'live' | 'reconnecting' | 'offline';

export type StreamAction =
  | { kind: 'message'; message: ApiMessage }
  | { kind: 'reaction'; reaction: ReactionEvent }
  | { kind: 'reactions'; counts: ReactionsEvent }
  | { kind: 'reset'; chatId: string | null; reason: string }
  | { kind: 'subscribed'; chats: string[] };

export const EVENT_NAMES = ['message', 'reaction', 'reactions', 'reset', 'subscribed'] as const;

/** Decodes one named SSE event; `null` for anything malformed. */
export function decode(name: string, data: string): StreamAction | null {
  let value: unknown;
  try {
    value = JSON.parse(data);
  } catch {
    return null;
  }
  if (typeof value !== 'object' || value === null) return null;
  const v = value as Record<string, unknown>;
  switch (name) {
    case 'message':
      return typeof v.id === 'string' && typeof v.text === 'string'
        ? { kind: 'message', message: value as ApiMessage }
        : null;
    case 'reaction':
      return typeof v.id === 'string' && typeof v.messageId === 'string' && typeof v.emoji === 'string'
        && (v.action === 'add' || v.action === 'remove')
        ? { kind: 'reaction', reaction: value as ReactionEvent }
        : null;
    case 'reactions':
      return typeof v.messageId === 'string' && typeof v.asOf === 'string' && typeof v.reactions === 'object'
        ? { kind: 'reactions', counts: value as ReactionsEvent }
        : null;
    case 'reset':
      return {
        kind: 'reset',
        chatId: typeof v.chatId === 'string' ? v.chatId : null,
        reason: typeof v.reason === 'string' ? v.reason : 'unknown',
      };
    case 'subscribed':
      return Array.isArray(v.chats) && v.chats.every((c) => typeof c === 'string')
        ? { kind: 'subscribed', chats: v.chats as string[] }
        : null;
    default:
      return null;
  }
}

/** The state to show for an EventSource after an error. */
export function statusAfterError(readyState: number, online: boolean): Status {
  if (!online) return 'offline';
  // 0: the browser reconnects by itself (with Last-Event-ID); 2: it gave up.
  return readyState === 0 ? 'reconnecting' : 'offline';
}

export interface StreamHandlers {
  onAction(action: StreamAction): void;
  onStatus(status: Status): void;
}

/**
 * The stream of `chatIds` on one connection: from the stream position
 * `position` if given (the chats it covers resume from it, the others
 * start live), with `token` if given.
 */
export function streamUrl(baseUrl: string, chatIds: string[], position: string | null, token: string | null): string {
  const query = new URLSearchParams();
  for (const chatId of chatIds) query.append('chat', chatId);
  if (position) query.set('lastEventId', position);
  if (token) query.set('token', token);
  return `${baseUrl}/api/events?${query}`;
}

/**
 * Opens one stream of `chatIds` from `position` (none: from now). The
 * browser resumes by itself with Last-Event-ID after a drop; should it give
 * up, this reopens from the newest position seen after `retryMs`.
 * `onPosition` hears every new position. Answers a function that closes it
 * for good. `token` goes in the URL: EventSource sets no headers.
 */
export function openStream(
  baseUrl: string,
  chatIds: string[],
  position: string | null,
  handlers: StreamHandlers & { onPosition?: (position: string) => void },
  token: string | null = null,
  retryMs = 3000,
): () => void {
  let closed = false;
  let source: EventSource | null = null;
  let timer: ReturnType<typeof setTimeout> | undefined;
  let last = position;
  const open = () => {
    if (closed) return;
    source = new EventSource(streamUrl(baseUrl, chatIds, last, token));
    handlers.onStatus('connecting');
    source.onopen = () => handlers.onStatus('live');
    source.onerror = () => {
      if (!source) return;
      const status = statusAfterError(source.readyState, navigator.onLine);
      handlers.onStatus(status);
      if (source.readyState === 2) {
        source = null;
        timer = setTimeout(open, retryMs);
      }
    };
    for (const name of EVENT_NAMES) {
      source.addEventListener(name, (event) => {
        const message = event as MessageEvent<string>;
        if (message.lastEventId && message.lastEventId !== last) {
          last = message.lastEventId;
          handlers.onPosition?.(last);
        }
        const action = decode(name, message.data);
        if (action) handlers.onAction(action);
      });
    }
  };
  open();
  return () => {
    closed = true;
    clearTimeout(timer);
    source?.close();
  };
}
