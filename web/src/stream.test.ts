import { describe, expect, it } from 'vitest';
import { decode, statusAfterError, streamUrl } from './stream';

describe('decoding stream events', () => {
  it('turns each named event into its action', () => {
    expect(decode('message', '{"id":"1-0000000000000001","chatId":"c","userId":"u","text":"hi","createdAt":"x"}'))
      .toMatchObject({ kind: 'message', message: { text: 'hi' } });
    expect(decode('reaction', '{"id":"1-0000000000000002","chatId":"c","messageId":"1-0000000000000001","userId":"u","emoji":"👍","action":"add"}'))
      .toMatchObject({ kind: 'reaction', reaction: { emoji: '👍', action: 'add' } });
    expect(decode('reactions', '{"chatId":"c","messageId":"1-0000000000000001","reactions":{"👍":3},"asOf":"1-0000000000000009"}'))
      .toMatchObject({ kind: 'reactions', counts: { reactions: { '👍': 3 } } });
    expect(decode('reset', '{"reason":"too old to replay"}')).toEqual({ kind: 'reset', reason: 'too old to replay' });
  });

  it('drops what it cannot read instead of failing', () => {
    expect(decode('message', 'not json')).toBeNull();
    expect(decode('message', '{"id":1}')).toBeNull();
    expect(decode('reaction', '{"id":"x","messageId":"y","emoji":"👍","action":"poke"}')).toBeNull();
    expect(decode('unknown', '{}')).toBeNull();
  });
});

describe('connection state', () => {
  it('says reconnecting while the browser retries, offline when it gave up or the network is gone', () => {
    expect(statusAfterError(0, true)).toBe('reconnecting');
    expect(statusAfterError(2, true)).toBe('offline');
    expect(statusAfterError(0, false)).toBe('offline');
  });
});

describe('the stream URL', () => {
  it('carries the resume point and the token, encoded', () => {
    expect(streamUrl('http://h:8081', 'lobby', null, null)).toBe('http://h:8081/api/chats/lobby/events');
    expect(streamUrl('http://h:8081', 'lobby', '1-0000000000000009', 'a.b+c')).toBe(
      'http://h:8081/api/chats/lobby/events?lastEventId=1-0000000000000009&token=a.b%2Bc',
    );
  });
});
