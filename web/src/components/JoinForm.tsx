// Who I am and which chat I am in, checked against the server's rules
// before joining.

import { useState } from 'react';
import type { Patterns } from '../api';

interface Props {
  me: string;
  chatId: string;
  /** The server's rules; until they are known, the server alone checks. */
  patterns: Patterns | null;
  onJoin: (me: string, chatId: string) => void;
  onError: (message: string) => void;
}

export function JoinForm({ me, chatId, patterns, onJoin, onError }: Props) {
  const [user, setUser] = useState(me);
  const [chat, setChat] = useState(chatId);
  const join = (event: React.FormEvent) => {
    event.preventDefault();
    if (patterns && !new RegExp(patterns.userId).test(user)) return onError('Name: 1 to 64 letters, digits or . _ @ -');
    if (patterns && !new RegExp(patterns.chatId).test(chat)) return onError('Chat: 1 to 64 letters, digits, _ or -');
    onJoin(user, chat);
  };
  return (
    <form onSubmit={join} className="join">
      <label>
        Name <input aria-label="name" value={user} onChange={(e) => setUser(e.target.value)} />
      </label>
      <label>
        Chat <input aria-label="chat" value={chat} onChange={(e) => setChat(e.target.value)} />
      </label>
      <button type="submit">Join</button>
    </form>
  );
}
