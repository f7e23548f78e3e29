// The chat view: a list of joined chats (kept in localStorage) beside the
// one on screen. One stream follows every joined chat; switching chats
// does not reconnect, joining or leaving one reconnects once from the
// stream's position. Each chat's history loads on joining (older pages on
// scroll). Every API error is shown in words.

import { useCallback, useEffect, useReducer, useRef, useState } from 'react';
import { ApiError, addReaction, postMessage, removeReaction } from './api';
import { initial, reducer } from './chat';
import { ErrorBanner, HotBanner } from './components/Banners';
import { ChatList } from './components/ChatList';
import { Composer } from './components/Composer';
import { JoinForm } from './components/JoinForm';
import { MessageList } from './components/MessageList';
import { TokenForm } from './components/TokenForm';
import { useCountdown } from './hooks/useCountdown';
import { useHistory } from './hooks/useHistory';
import { useSession } from './hooks/useSession';
import { useStream } from './hooks/useStream';
import { emptyChat } from './model';
import type { StreamAction } from './stream';

function words(error: unknown): string {
  if (error instanceof ApiError) return error.detail ? `${error.title}: ${error.detail}` : error.title;
  return String(error);
}

function randomId(): string {
  return globalThis.crypto?.randomUUID?.() ?? `${Date.now()}-${Math.random().toString(36).slice(2)}`;
}

/** The joined chats as stored: `chat.joined` (a JSON list), with `chat.chat` among them. */
function storedChats(): { joined: string[]; current: string } {
  const current = localStorage.getItem('chat.chat') ?? 'lobby';
  let joined: string[] = [];
  try {
    const parsed: unknown = JSON.parse(localStorage.getItem('chat.joined') ?? '[]');
    if (Array.isArray(parsed)) joined = parsed.filter((c): c is string => typeof c === 'string');
  } catch {
    // Not ours to read: start over.
  }
  if (!joined.includes(current)) joined.push(current);
  return { joined, current };
}

export function App() {
  const [me, setMe] = useState(() => localStorage.getItem('chat.user') ?? `guest-${Math.floor(Math.random() * 9000 + 1000)}`);
  const [joined, setJoined] = useState(() => storedChats().joined);
  const [state, dispatch] = useReducer(reducer, null, () => {
    const stored = storedChats();
    return initial(stored.joined, stored.current);
  });
  const chatId = state.current;
  const chat = state.chats[chatId] ?? emptyChat(chatId);
  const [error, setError] = useState<string | null>(null);
  const list = useRef<HTMLDivElement>(null);
  const stateRef = useRef(state);
  stateRef.current = state;
  const showError = useCallback((e: unknown) => setError(words(e)), []);

  const session = useSession(me, showError);
  // Who speaks: with tokens, the token's user, and requests name no one.
  const { user, named } = session;
  const history = useHistory(named, dispatch, showError);
  const { load } = history;

  useEffect(() => {
    localStorage.setItem('chat.joined', JSON.stringify(joined));
    localStorage.setItem('chat.chat', chatId);
  }, [joined, chatId]);

  // One stream for every joined chat, then each chat's latest page; the
  // two merge by id. On a chat's `reset` its newest page is fetched again.
  const onStreamAction = (action: StreamAction) => {
    if (action.kind === 'reset') {
      const resetChats = action.chatId ? [action.chatId] : Object.keys(stateRef.current.chats);
      for (const id of resetChats) {
        const last = stateRef.current.chats[id]?.lastEventId;
        void load(id, last ? { after: last } : {}, false);
      }
    } else if (action.kind !== 'subscribed') {
      dispatch({ kind: 'stream', action, me: user });
    }
  };
  const status = useStream(session.streamUrl, joined, session.token?.token ?? null, onStreamAction);

  // Each joined chat's latest page, once per chat (again for a new name).
  const ready = session.streamUrl !== null;
  const loaded = useRef(new Set<string>());
  useEffect(() => {
    loaded.current.clear();
  }, [user]);
  useEffect(() => {
    if (!ready) return;
    for (const id of joined) {
      if (loaded.current.has(id)) continue;
      loaded.current.add(id);
      void load(id, {}, false);
    }
  }, [joined, user, ready, load]);

  const hotSeconds = useCountdown(history.hotUntil);

  const loadOlder = () => {
    const first = chat.messages[0];
    if (first && chat.hasOlder) void load(chatId, { before: first.id }, true);
  };

  const join = (user: string, id: string) => {
    localStorage.setItem('chat.user', user);
    if (user !== me) setMe(user);
    if (!joined.includes(id)) setJoined([...joined, id]);
    dispatch({ kind: 'join', chatIds: [id], current: id });
    setError(null);
  };

  const leave = (id: string) => {
    const rest = joined.filter((c) => c !== id);
    if (rest.length === 0) return;
    loaded.current.delete(id);
    setJoined(rest);
    dispatch({ kind: 'leave', chatId: id });
  };

  const send = async (text: string) => {
    try {
      const message = await postMessage(chatId, named, text, randomId());
      dispatch({ kind: 'posted', message });
      requestAnimationFrame(() => list.current?.scrollTo({ top: list.current.scrollHeight }));
      return true;
    } catch (e) {
      showError(e);
      return false;
    }
  };

  const toggle = async (messageId: string, emoji: string, held: boolean) => {
    const on = chatId;
    try {
      if (held) await removeReaction(on, messageId, named, emoji);
      else await addReaction(on, messageId, named, emoji);
      dispatch({ kind: 'mine', chatId: on, messageId, emoji, held: !held });
    } catch (e) {
      showError(e);
    }
  };

  const { config } = session;
  return (
    <div className="app">
      <header>
        <JoinForm
          key={`${me}\n${chatId}`}
          me={me}
          chatId={chatId}
          patterns={config?.patterns ?? null}
          onJoin={join}
          onError={setError}
        />
        <span className={`status ${status}`} data-testid="status">
          {status}
        </span>
      </header>
      {config?.auth && !config.devTokens && !session.token && <TokenForm onToken={session.signIn} />}
      <div className="body">
        <ChatList
          chatIds={joined}
          current={chatId}
          chats={state.chats}
          unread={state.unread}
          onOpen={(id) => dispatch({ kind: 'open', chatId: id })}
          onLeave={leave}
        />
        <main className="chat">
          <h1>
            #{chatId} <small>as {user}</small>
          </h1>
          {history.hotUntil !== null && <HotBanner seconds={hotSeconds} />}
          {error && <ErrorBanner error={error} onDismiss={() => setError(null)} />}
          <MessageList
            messages={chat.messages}
            hasOlder={chat.hasOlder}
            me={user}
            list={list}
            onOlder={loadOlder}
            onToggle={(messageId, emoji, held) => void toggle(messageId, emoji, held)}
          />
          <Composer maxChars={config?.maxTextChars} onSend={send} />
        </main>
      </div>
    </div>
  );
}
