import { describe, expect, it } from 'vitest';
import { initial, reducer } from './chat';

const id = (n: number) => `1-${n.toString(16).padStart(16, '0')}`;
const message = (chatId: string, n: number, userId = 'bob') => ({
  kind: 'stream' as const,
  me: 'me',
  action: {
    kind: 'message' as const,
    message: { id: id(n), chatId, userId, text: `m${n}`, createdAt: 'x' },
  },
});

describe('many chats', () => {
  it('route each event to its chat and count what arrives off screen once', () => {
    let state = initial(['a', 'b', 'c'], 'a');
    state = reducer(state, message('a', 1));
    state = reducer(state, message('b', 2));
    state = reducer(state, message('b', 2));
    state = reducer(state, message('b', 3, 'me'));
    state = reducer(state, message('c', 4));
    state = reducer(state, message('zzz', 5));
    expect(state.chats.a.messages.map((m) => m.text)).toEqual(['m1']);
    expect(state.chats.b.messages.map((m) => m.text)).toEqual(['m2', 'm3']);
    expect(state.unread).toEqual({ a: 0, b: 1, c: 1 });
    expect(state.chats.zzz).toBeUndefined();
    state = reducer(state, { kind: 'open', chatId: 'b' });
    expect(state.current).toBe('b');
    expect(state.unread.b).toBe(0);
  });

  it('join and leave chats, keeping the others', () => {
    let state = initial(['a'], 'a');
    state = reducer(state, message('a', 1));
    state = reducer(state, { kind: 'join', chatIds: ['d'], current: 'd' });
    expect(Object.keys(state.chats)).toEqual(['a', 'd']);
    expect(state.chats.a.messages).toHaveLength(1);
    state = reducer(state, { kind: 'leave', chatId: 'd' });
    expect(state.current).toBe('a');
    expect(Object.keys(state.chats)).toEqual(['a']);
  });
});
