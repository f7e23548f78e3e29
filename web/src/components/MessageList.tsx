// The chat's messages, oldest first, each with its reactions; older pages
// load on scrolling to the top.

import type { RefObject } from 'react';
import type { ChatMessage } from '../model';

const EMOJIS = ['👍', '❤️', '😂', '🎉', '😮'];

interface Props {
  messages: ChatMessage[];
  hasOlder: boolean;
  me: string;
  list: RefObject<HTMLDivElement | null>;
  onOlder: () => void;
  onToggle: (messageId: string, emoji: string, held: boolean) => void;
}

export function MessageList({ messages, hasOlder, me, list, onOlder, onToggle }: Props) {
  return (
    <div
      className="messages"
      ref={list}
      data-testid="messages"
      onScroll={(e) => {
        if (e.currentTarget.scrollTop === 0) onOlder();
      }}
    >
      {hasOlder && (
        <button className="older" onClick={onOlder}>
          Load older messages
        </button>
      )}
      {messages.map((message) => (
        <MessageView key={message.id} message={message} own={message.userId === me} onToggle={onToggle} />
      ))}
    </div>
  );
}

function MessageView({
  message,
  own,
  onToggle,
}: {
  message: ChatMessage;
  own: boolean;
  onToggle: Props['onToggle'];
}) {
  const shown = [...new Set([...EMOJIS, ...Object.keys(message.reactions)])];
  return (
    <article className={own ? 'message own' : 'message'} data-id={message.id}>
      <div className="meta">
        <b>{message.userId}</b> <time>{new Date(message.createdAt).toLocaleTimeString()}</time>
      </div>
      <p className="text">{message.text}</p>
      <div className="reactions">
        {shown.map((emoji) => {
          const count = message.reactions[emoji] ?? 0;
          const held = message.mine.includes(emoji);
          return (
            <button
              key={emoji}
              className={held ? 'reaction mine' : 'reaction'}
              aria-pressed={held}
              data-emoji={emoji}
              onClick={() => onToggle(message.id, emoji, held)}
            >
              {emoji}
              {count > 0 && <span className="count">{count}</span>}
            </button>
          );
        })}
      </div>
    </article>
  );
}
