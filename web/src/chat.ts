// The joined chats as the view holds them, and how each thing that happens
// changes them: pages, own posts and reactions, and stream events, each
// routed to its chat; unread counts for the chats not on screen.

import { type ApiMessage, type ChatState, type Page, applyMessage, applyPage, applyReaction, applyReactions, emptyChat, setMine } from './model';
import type { StreamAction } from './stream';

export interface ChatsState {
  /** The chat on screen. */
  current: string;
  /** Every joined chat's state, by id. */
  chats: Record<string, ChatState>;
  /** Messages from others that arrived while their chat was not on screen. */
  unread: Record<string, number>;
}

export type Action =
  | { kind: 'join'; chatIds: string[]; current: string }
  | { kind: 'leave'; chatId: string }
  | { kind: 'open'; chatId: string }
  | { kind: 'page'; page: Page; older: boolean }
  | { kind: 'posted'; message: ApiMessage }
  | { kind: 'mine'; chatId: string; messageId: string; emoji: string; held: boolean }
  | { kind: 'stream'; action: StreamAction; me: string };

export function initial(chatIds: string[], current: string): ChatsState {
  return reducer({ current, chats: {}, unread: {} }, { kind: 'join', chatIds, current });
}

function update(state: ChatsState, chatId: string, change: (chat: ChatState) => ChatState): ChatsState {
  const chat = state.chats[chatId];
  if (!chat) return state;
  return { ...state, chats: { ...state.chats, [chatId]: change(chat) } };
}

export function reducer(state: ChatsState, action: Action): ChatsState {
  switch (action.kind) {
    case 'join': {
      const chats = { ...state.chats };
      for (const chatId of action.chatIds) chats[chatId] ??= emptyChat(chatId);
      return { ...state, chats, current: action.current, unread: { ...state.unread, [action.current]: 0 } };
    }
    case 'leave': {
      const chats = { ...state.chats };
      const unread = { ...state.unread };
      delete chats[action.chatId];
      delete unread[action.chatId];
      const current = state.current === action.chatId ? (Object.keys(chats)[0] ?? '') : state.current;
      return { current, chats, unread };
    }
    case 'open':
      return state.chats[action.chatId]
        ? { ...state, current: action.chatId, unread: { ...state.unread, [action.chatId]: 0 } }
        : state;
    case 'page':
      return update(state, action.page.chatId, (chat) => applyPage(chat, action.page, action.older));
    case 'posted':
      return update(state, action.message.chatId, (chat) => applyMessage(chat, action.message, false));
    case 'mine':
      return update(state, action.chatId, (chat) => setMine(chat, action.messageId, action.emoji, action.held));
    case 'stream': {
      const event = action.action;
      if (event.kind === 'message') {
        const { chatId } = event.message;
        const chat = state.chats[chatId];
        if (!chat) return state;
        const fresh = !chat.messages.some((m) => m.id === event.message.id);
        const next = update(state, chatId, (c) => applyMessage(c, event.message, true));
        if (!fresh || chatId === state.current || event.message.userId === action.me) return next;
        return { ...next, unread: { ...next.unread, [chatId]: (next.unread[chatId] ?? 0) + 1 } };
      }
      if (event.kind === 'reaction') return update(state, event.reaction.chatId, (c) => applyReaction(c, event.reaction, action.me));
      if (event.kind === 'reactions') return update(state, event.counts.chatId, (c) => applyReactions(c, event.counts));
      return state;
    }
  }
}
