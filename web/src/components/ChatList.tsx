// The joined chats: each with its unread count and last message; one is on
// screen. A chat can be left from here.

import type { ChatState } from '../model';

interface Props {
  chatIds: string[];
  current: string;
  chats: Record<string, ChatState>;
  unread: Record<string, number>;
  onOpen: (chatId: string) => void;
  onLeave: (chatId: string) => void;
}

export function ChatList({ chatIds, current, chats, unread, onOpen, onLeave }: Props) {
  return (
    <nav className="chat-list" data-testid="chat-list" aria-label="joined chats">
      {chatIds.map((chatId) => {
        const last = chats[chatId]?.messages.at(-1);
        const count = unread[chatId] ?? 0;
        return (
          <div key={chatId} className={chatId === current ? 'chat-item current' : 'chat-item'} data-chat={chatId}>
            <button className="open" onClick={() => onOpen(chatId)} aria-current={chatId === current}>
              <span className="name">#{chatId}</span>
              {count > 0 && (
                <span className="unread" data-testid="unread" aria-label={`${count} unread`}>
                  {count}
                </span>
              )}
              <span className="last">{last ? `${last.userId}: ${last.text}` : ' '}</span>
            </button>
            {chatIds.length > 1 && (
              <button className="leave" onClick={() => onLeave(chatId)} aria-label={`leave ${chatId}`}>
                ×
              </button>
            )}
          </div>
        );
      })}
    </nav>
  );
}
