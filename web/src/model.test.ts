import { describe, expect, it } from 'vitest';
import { type Page, applyMessage, applyPage, applyReaction, applyReactions, compareIds, emptyChat } from './model';

const id = (n: number) => `1-${n.toString(16).padStart(16, '0')}`;
const message = (n: number, reactions: Record<string, number> = {}) => ({
  id: id(n),
  chatId: 'lobby',
  userId: 'alice',
  text: `m${n}`,
  createdAt: '2026-11-22T10:00:00.000Z',
  reactions,
});
const page = (ns: number[], cursor: number, hasOlder = false): Page => ({
  chatId: 'lobby',
  messages: ns.map((n) => message(n)),
  cursor: id(cursor),
  hasMore: false,
  hasOlder,
});
const reaction = (n: number, on: number, userId: string, action: 'add' | 'remove', emoji = '👍') => ({
  id: id(n),
  chatId: 'lobby',
  messageId: id(on),
  userId,
  emoji,
  action,
});

describe('ids', () => {
  it('compare in log order, wider offsets later', () => {
    expect(compareIds(id(9), id(10))).toBeLessThan(0);
    expect(compareIds(id(255), id(16))).toBeGreaterThan(0);
    expect(compareIds(id(3), id(3))).toBe(0);
  });
});

describe('merging fetched pages and live events', () => {
  it('shows each message once, in id order, whichever way it arrived', () => {
    let state = emptyChat('lobby');
    // Live events arrive before the page that also holds them.
    state = applyMessage(state, message(5), true);
    state = applyMessage(state, message(7), true);
    state = applyPage(state, page([3, 5], 6), false);
    state = applyMessage(state, message(7), true);
    state = applyMessage(state, message(7), false);
    expect(state.messages.map((m) => m.text)).toEqual(['m3', 'm5', 'm7']);
    expect(state.lastEventId).toBe(id(7));
  });

  it('adds older pages in front without moving the resume point', () => {
    let state = applyPage(emptyChat('lobby'), page([10, 11], 12, true), false);
    state = applyPage(state, page([8, 9], 9, false), true);
    expect(state.messages.map((m) => m.text)).toEqual(['m8', 'm9', 'm10', 'm11']);
    expect(state.hasOlder).toBe(false);
    expect(state.lastEventId).toBe(id(12));
  });
});

describe('reaction counts', () => {
  it('apply a reaction only when it is newer than the counts', () => {
    let state = applyPage(emptyChat('lobby'), { ...page([], 6), messages: [message(5, { '👍': 2 })] }, false);
    state = applyReaction(state, reaction(6, 5, 'bob', 'add'), 'me');
    expect(state.messages[0].reactions).toEqual({ '👍': 2 });
    state = applyReaction(state, reaction(7, 5, 'carol', 'add'), 'me');
    state = applyReaction(state, reaction(8, 5, 'carol', 'add'), 'me');
    expect(state.messages[0].reactions).toEqual({ '👍': 3 });
    state = applyReaction(state, reaction(9, 5, 'carol', 'remove'), 'me');
    state = applyReaction(state, reaction(10, 5, 'bob', 'remove'), 'me');
    state = applyReaction(state, reaction(11, 5, 'dan', 'remove'), 'me');
    expect(state.messages[0].reactions).toEqual({});
  });

  it('take coalesced counts as absolute and skip the reactions they include', () => {
    let state = applyMessage(emptyChat('lobby'), message(1), true);
    state = applyReaction(state, reaction(2, 1, 'me', 'add'), 'me');
    expect(state.messages[0].mine).toEqual(['👍']);
    state = applyReactions(state, { chatId: 'lobby', messageId: id(1), reactions: { '👍': 40, '🎉': 2 }, asOf: id(30) });
    // A resume replays reactions the counts already hold: nothing changes.
    state = applyReaction(state, reaction(20, 1, 'zed', 'add'), 'me');
    expect(state.messages[0].reactions).toEqual({ '👍': 40, '🎉': 2 });
    // Older coalesced counts never replace newer ones.
    state = applyReactions(state, { chatId: 'lobby', messageId: id(1), reactions: { '👍': 1 }, asOf: id(25) });
    expect(state.messages[0].reactions['👍']).toBe(40);
    state = applyReaction(state, reaction(31, 1, 'zed', 'add', '🎉'), 'me');
    expect(state.messages[0].reactions).toEqual({ '👍': 40, '🎉': 3 });
  });

  it("keep one's own reactions across a hot chat's page, which carries no mine, and take a page that states them", () => {
    let state = applyPage(emptyChat('lobby'), { ...page([], 2), messages: [{ ...message(1), mine: ['👍'] }] }, false);
    // A hot chat's snapshot page: counts, no mine.
    state = applyPage(state, { ...page([], 9), messages: [message(1, { '👍': 7 })] }, false);
    expect(state.messages[0].reactions).toEqual({ '👍': 7 });
    expect(state.messages[0].mine).toEqual(['👍']);
    // A cold page states mine, even when it is empty.
    state = applyPage(state, { ...page([], 12), messages: [{ ...message(1, { '👍': 6 }), mine: [] }] }, false);
    expect(state.messages[0].mine).toEqual([]);
  });
});
