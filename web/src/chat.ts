// One chat's state as the view holds it, and how each thing that happens
// changes it: pages, own posts and reactions, and stream events.

import { type ApiMessage, type ChatState, type Page, applyMessage, applyPage, applyReaction, applyReactions, emptyChat, setMine } from './model';
import type { StreamAction } from './stream';

export type Action =
  | { kind: 'reset'; chatId: string }
  | { kind: 'page'; page: Page; older: boolean }
  | { kind: 'posted'; message: ApiMessage }
  | { kind: 'mine'; messageId: string; emoji: string; held: boolean }
  | { kind: 'stream'; action: StreamAction; me: string };

export function reducer(state: ChatState, action: Action): ChatState {
  switch (action.kind) {
    case 'reset':
      return emptyChat(action.chatId);
    case 'page':
      return action.page.chatId === state.chatId ? applyPage(state, action.page, action.older) : state;
    case 'posted':
      return action.message.chatId === state.chatId ? applyMessage(state, action.message, false) : state;
    case 'mine':
      return setMine(state, action.messageId, action.emoji, action.held);
    case 'stream': {
      const event = action.action;
      if (event.kind === 'message') return applyMessage(state, event.message, true);
      if (event.kind === 'reaction') return applyReaction(state, event.reaction, action.me);
      if (event.kind === 'reactions') return applyReactions(state, event.counts);
      return state;
    }
  }
}
