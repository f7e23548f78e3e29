// The chat view: join a chat, read its history (older pages on scroll),
// follow it live, post, react. Every API error is shown in words.

import { useCallback, useEffect, useReducer, useRef, useState } from 'react';
import { ApiError, addReaction, postMessage, removeReaction } from './api';
import { reducer } from './chat';
import { ErrorBanner, HotBanner } from './components/Banners';
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

export function App() {
  const [me, setMe] = useState(() => localStorage.getItem('chat.user') ?? `guest-${Math.floor(Math.random() * 9000 + 1000)}`);
  const [chatId, setChatId] = useState(() => localStorage.getItem('chat.chat') ?? 'lobby');
  const [state, dispatch] = useReducer(reducer, chatId, emptyChat);
  const [error, setError] = useState<string | null>(null);
  const list = useRef<HTMLDivElement>(null);
  const stateRef = useRef(state);
  stateRef.current = state;
  const showError = useCallback((e: unknown) => setError(words(e)), []);

  const session = useSession(me, showError);
  const history = useHistory(chatId, me, dispatch, showError);
  const { load } = history;

  // The stream first (live from now, or from the last event seen when a
  // fresh token reopens it), then, on joining, the latest page; the two
  // merge by id. On `reset` the newest page is fetched again.
  const onStreamAction = (action: StreamAction) => {
    if (action.kind === 'reset') {
      const last = stateRef.current.lastEventId;
      void load(last ? { after: last } : {}, false);
    } else {
      dispatch({ kind: 'stream', action, me });
    }
  };
  const resumeFrom = () => (stateRef.current.chatId === chatId ? stateRef.current.lastEventId : null);
  const status = useStream(session.streamUrl, chatId, resumeFrom, session.token?.token ?? null, onStreamAction);

  const ready = session.streamUrl !== null;
  useEffect(() => {
    if (!ready) return;
    dispatch({ kind: 'reset', chatId });
    setError(null);
    void load({}, false);
  }, [chatId, me, ready, load]);

  const hotSeconds = useCountdown(history.hotUntil);

  const loadOlder = () => {
    const first = state.messages[0];
    if (first && state.hasOlder) void load({ before: first.id }, true);
  };

  const join = (user: string, chat: string) => {
    localStorage.setItem('chat.user', user);
    localStorage.setItem('chat.chat', chat);
    setMe(user);
    setChatId(chat);
  };

  const send = async (text: string) => {
    try {
      const message = await postMessage(chatId, me, text, randomId());
      dispatch({ kind: 'posted', message });
      requestAnimationFrame(() => list.current?.scrollTo({ top: list.current.scrollHeight }));
      return true;
    } catch (e) {
      showError(e);
      return false;
    }
  };

  const toggle = async (messageId: string, emoji: string, held: boolean) => {
    try {
      if (held) await removeReaction(chatId, messageId, me, emoji);
      else await addReaction(chatId, messageId, me, emoji);
      dispatch({ kind: 'mine', messageId, emoji, held: !held });
    } catch (e) {
      showError(e);
    }
  };

  const { config } = session;
  return (
    <div className="app">
      <header>
        <JoinForm
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
      <h1>
        #{chatId} <small>as {me}</small>
      </h1>
      {history.hotUntil !== null && <HotBanner seconds={hotSeconds} />}
      {error && <ErrorBanner error={error} onDismiss={() => setError(null)} />}
      <MessageList
        messages={state.messages}
        hasOlder={state.hasOlder}
        me={me}
        list={list}
        onOlder={loadOlder}
        onToggle={(messageId, emoji, held) => void toggle(messageId, emoji, held)}
      />
      <Composer maxChars={config?.maxTextChars} onSend={send} />
    </div>
  );
}
