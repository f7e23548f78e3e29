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
    expect(decode('reset', '{"reason":"too old to replay"}')).toEqual({ kind: 'reset', chatId: null, reason: 'too old to replay' });
    expect(decode('reset', '{"chatId":"dev","reason":"too old to replay"}')).toEqual({
      kind: 'reset',
      chatId: 'dev',
      reason: 'too old to replay',
    });
    expect(decode('subscribed', '{"chats":["a","b"]}')).toEqual({ kind: 'subscribed', chats: ['a', 'b'] });
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
  it('names every chat and carries the position and the token, encoded', () => {
    expect(streamUrl('http://h:8081', ['lobby'], null, null)).toBe('http://h:8081/api/events?chat=lobby');
    expect(streamUrl('http://h:8081', ['lobby', 'dev'], '0:1a.2:3f~0c4f1e2a', 'a.b+c')).toBe(
      'http://h:8081/api/events?chat=lobby&chat=dev&lastEventId=0%3A1a.2%3A3f%7E0c4f1e2a&token=a.b%2Bc',
    );
  });
});
