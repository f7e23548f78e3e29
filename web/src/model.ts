// The chat as the client holds it: messages merged by id from fetched
// pages and live events, so nothing shows twice or goes missing, with
// reaction counts that never count an event twice.

export interface ApiMessage {
  id: string;
  chatId: string;
  userId: string;
  text: string;
  createdAt: string;
  clientMessageId?: string;
  reactions?: Record<string, number>;
  mine?: string[];
}

export interface Page {
  chatId: string;
  messages: ApiMessage[];
  cursor: string | null;
  hasMore: boolean;
  hasOlder: boolean;
}

export interface ReactionEvent {
  id: string;
  chatId: string;
  messageId: string;
  userId: string;
  emoji: string;
  action: 'add' | 'remove';
}

export interface ReactionsEvent {
  chatId: string;
  messageId: string;
  reactions: Record<string, number>;
  asOf: string;
}

export interface ChatMessage {
  id: string;
  userId: string;
  text: string;
  createdAt: string;
  reactions: Record<string, number>;
  /** Emojis the current user holds on it. */
  mine: string[];
  /** The counts include every event up to this id; later reactions apply on top. */
  asOf: string | null;
  /** Users seen adding each emoji since `asOf`, so a repeated add counts once. */
  seen: Record<string, string[]>;
}

export interface ChatState {
  chatId: string;
  /** Oldest first, by id. */
  messages: ChatMessage[];
  /** Older messages exist before the first one held. */
  hasOlder: boolean;
  /** The newest event id known: where a stream resumes. */
  lastEventId: string | null;
}

/** Ids of one chat are `<partition>-<16 hex digits>`: they compare as strings. */
export function compareIds(a: string, b: string): number {
  if (a.length !== b.length) return a.length - b.length;
  return a < b ? -1 : a > b ? 1 : 0;
}

function newer(a: string | null, b: string | null): string | null {
  if (a === null) return b;
  if (b === null) return a;
  return compareIds(a, b) >= 0 ? a : b;
}

export function emptyChat(chatId: string): ChatState {
  return { chatId, messages: [], hasOlder: false, lastEventId: null };
}

function fromApi(message: ApiMessage, asOf: string | null): ChatMessage {
  return {
    id: message.id,
    userId: message.userId,
    text: message.text,
    createdAt: message.createdAt,
    reactions: { ...(message.reactions ?? {}) },
    mine: [...(message.mine ?? [])],
    asOf,
    seen: {},
  };
}

/**
 * Inserts or replaces messages, keeping id order and one entry per id.
 * `mineKnown`: ids whose `mine` the incoming copy states; the others (a hot
 * chat's pages carry no `mine`) keep the one held.
 */
function upsert(
  list: ChatMessage[],
  incoming: ChatMessage[],
  replace: boolean,
  mineKnown: Set<string> = new Set(),
): ChatMessage[] {
  const byId = new Map(list.map((m) => [m.id, m]));
  for (const message of incoming) {
    const held = byId.get(message.id);
    if (!held) {
      byId.set(message.id, message);
    } else if (replace) {
      // A fetched page's counts are absolute; keep what is newer.
      const fresh = held.asOf === null || (message.asOf !== null && compareIds(message.asOf, held.asOf) >= 0);
      byId.set(message.id, fresh ? { ...message, mine: mineKnown.has(message.id) ? message.mine : held.mine } : held);
    }
  }
  return [...byId.values()].sort((a, b) => compareIds(a.id, b.id));
}

/** Merges a fetched page: its counts are as of the page's cursor. */
export function applyPage(state: ChatState, page: Page, older: boolean): ChatState {
  const asOf = page.cursor;
  const mineKnown = new Set(page.messages.filter((m) => m.mine !== undefined).map((m) => m.id));
  const messages = upsert(state.messages, page.messages.map((m) => fromApi(m, asOf)), true, mineKnown);
  return {
    ...state,
    messages,
    hasOlder: older || state.messages.length === 0 ? page.hasOlder : state.hasOlder,
    lastEventId: older ? state.lastEventId : newer(state.lastEventId, page.cursor),
  };
}

/** A message from the stream (or the answer to our own post). */
export function applyMessage(state: ChatState, message: ApiMessage, fromStream: boolean): ChatState {
  return {
    ...state,
    messages: upsert(state.messages, [fromApi(message, message.id)], false),
    lastEventId: fromStream ? newer(state.lastEventId, message.id) : state.lastEventId,
  };
}

/** One reaction change from the stream, applied unless the counts already include it. */
export function applyReaction(state: ChatState, event: ReactionEvent, me: string): ChatState {
  const lastEventId = newer(state.lastEventId, event.id);
  const messages = state.messages.map((message) => {
    if (message.id !== event.messageId) return message;
    if (message.asOf !== null && compareIds(event.id, message.asOf) <= 0) return message;
    const seen = { ...message.seen };
    const users = new Set(seen[event.emoji] ?? []);
    const reactions = { ...message.reactions };
    const count = reactions[event.emoji] ?? 0;
    if (event.action === 'add') {
      if (users.has(event.userId)) return { ...message, asOf: event.id };
      users.add(event.userId);
      reactions[event.emoji] = count + 1;
    } else {
      users.delete(event.userId);
      if (count <= 1) delete reactions[event.emoji];
      else reactions[event.emoji] = count - 1;
    }
    seen[event.emoji] = [...users];
    let mine = message.mine;
    if (event.userId === me) {
      mine = event.action === 'add'
        ? [...new Set([...mine, event.emoji])]
        : mine.filter((e) => e !== event.emoji);
    }
    return { ...message, reactions, seen, mine, asOf: event.id };
  });
  return { ...state, messages, lastEventId };
}

/** Coalesced counts of a hot chat: absolute, as of `asOf`. */
export function applyReactions(state: ChatState, event: ReactionsEvent): ChatState {
  const messages = state.messages.map((message) => {
    if (message.id !== event.messageId) return message;
    if (message.asOf !== null && compareIds(event.asOf, message.asOf) < 0) return message;
    return { ...message, reactions: { ...event.reactions }, asOf: event.asOf, seen: {} };
  });
  return { ...state, messages };
}

/** Our own reaction went through: remember that we hold (or dropped) it. */
export function setMine(state: ChatState, messageId: string, emoji: string, held: boolean): ChatState {
  return {
    ...state,
    messages: state.messages.map((m) =>
      m.id !== messageId
        ? m
        : { ...m, mine: held ? [...new Set([...m.mine, emoji])] : m.mine.filter((e) => e !== emoji) },
    ),
  };
}
