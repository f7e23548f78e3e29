// The chat view: join a chat, read its history (older pages on scroll),
// follow it live, post, react. Every API error is shown in words.

import { useCallback, useEffect, useReducer, useRef, useState } from 'react';
import {
  ApiError,
  type Token,
  type UiConfig,
  addReaction,
  devToken,
  fetchConfig,
  fetchPage,
  postMessage,
  removeReaction,
  setToken,
} from './api';
import {
  type ApiMessage,
  type ChatState,
  type Page,
  applyMessage,
  applyPage,
  applyReaction,
  applyReactions,
  emptyChat,
  setMine,
} from './model';
import { type Status, type StreamAction, openStream } from './stream';

const EMOJIS = ['👍', '❤️', '😂', '🎉', '😮'];
const CHAT_ID = /^[A-Za-z0-9_-]{1,64}$/;
const USER_ID = /^[A-Za-z0-9_.@-]{1,64}$/;

type Action =
  | { kind: 'reset'; chatId: string }
  | { kind: 'page'; page: Page; older: boolean }
  | { kind: 'posted'; message: ApiMessage }
  | { kind: 'mine'; messageId: string; emoji: string; held: boolean }
  | { kind: 'stream'; action: StreamAction; me: string };

function reducer(state: ChatState, action: Action): ChatState {
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
  const [draftUser, setDraftUser] = useState(me);
  const [draftChat, setDraftChat] = useState(chatId);
  const [state, dispatch] = useReducer(reducer, chatId, emptyChat);
  const [status, setStatus] = useState<Status>('connecting');
  const [error, setError] = useState<string | null>(null);
  const [hotUntil, setHotUntil] = useState<number | null>(null);
  const [config, setConfig] = useState<UiConfig | null>(null);
  const [token, setTokenState] = useState<Token | null>(null);
  const [pasted, setPasted] = useState('');
  const [text, setText] = useState('');
  const list = useRef<HTMLDivElement>(null);
  const retry = useRef<ReturnType<typeof setTimeout> | undefined>(undefined);
  const loading = useRef(false);
  const stateRef = useRef(state);
  stateRef.current = state;

  useEffect(() => {
    fetchConfig().then(setConfig, (e) => setError(words(e)));
  }, []);

  // Signing in, where the server wants tokens: a development token for the
  // name given, renewed a minute before it expires.
  useEffect(() => {
    if (!config?.auth || !config.devTokens) return;
    let timer: ReturnType<typeof setTimeout> | undefined;
    let cancelled = false;
    const signIn = () =>
      devToken(me).then(
        (fresh) => {
          if (cancelled) return;
          setToken(fresh.token);
          setTokenState(fresh);
          const renewIn = Math.max(5, fresh.expiresAt - Date.now() / 1000 - 60) * 1000;
          timer = setTimeout(signIn, renewIn);
        },
        (e) => setError(words(e)),
      );
    void signIn();
    return () => {
      cancelled = true;
      clearTimeout(timer);
    };
  }, [config, me]);

  const streamUrl = config && (!config.auth || token) ? config.streamUrl : null;
  const bearer = token?.token ?? null;

  /** Fetches a page; a 429 (hot chat) waits for Retry-After and tries once more then. */
  const load = useCallback(
    async (where: { before?: string; after?: string }, older: boolean) => {
      if (loading.current) return;
      loading.current = true;
      clearTimeout(retry.current);
      try {
        const page = await fetchPage(chatId, me, where);
        dispatch({ kind: 'page', page, older });
        setHotUntil(null);
      } catch (e) {
        if (e instanceof ApiError && e.status === 429) {
          const wait = (e.retryAfter ?? 1) * 1000;
          setHotUntil(Date.now() + wait);
          retry.current = setTimeout(() => void load(where, older), wait);
        } else {
          setError(words(e));
        }
      } finally {
        loading.current = false;
      }
    },
    [chatId, me],
  );

  // The stream first (live from now, or from the last event seen when a
  // fresh token reopens it), then, on joining, the latest page; the two
  // merge by id. On `reset` the newest page is fetched again.
  useEffect(() => {
    if (!streamUrl) return;
    const held = stateRef.current;
    const from = held.chatId === chatId ? held.lastEventId : null;
    const close = openStream(
      streamUrl,
      chatId,
      from,
      {
        onStatus: setStatus,
        onAction: (action) => {
          // The last stream actions, for a look from the browser's console.
          const log = ((window as { chatEvents?: unknown[] }).chatEvents ??= []);
          log.push(action);
          if (log.length > 200) log.shift();
          if (action.kind === 'reset') {
            const last = stateRef.current.lastEventId;
            void load(last ? { after: last } : {}, false);
          } else {
            dispatch({ kind: 'stream', action, me });
          }
        },
      },
      bearer,
    );
    const offline = () => setStatus('offline');
    window.addEventListener('offline', offline);
    return () => {
      close();
      window.removeEventListener('offline', offline);
    };
  }, [chatId, me, streamUrl, bearer, load]);

  const ready = streamUrl !== null;
  useEffect(() => {
    if (!ready) return;
    dispatch({ kind: 'reset', chatId });
    setError(null);
    void load({}, false);
    return () => clearTimeout(retry.current);
  }, [chatId, me, ready, load]);

  const [tick, setTick] = useState(0);
  useEffect(() => {
    if (hotUntil === null) return;
    const timer = setInterval(() => setTick((t) => t + 1), 500);
    return () => clearInterval(timer);
  }, [hotUntil]);

  const loadOlder = () => {
    const first = state.messages[0];
    if (first && state.hasOlder) void load({ before: first.id }, true);
  };

  const join = (event: React.FormEvent) => {
    event.preventDefault();
    if (!USER_ID.test(draftUser)) return setError('Name: 1 to 64 letters, digits or . _ @ -');
    if (!CHAT_ID.test(draftChat)) return setError('Chat: 1 to 64 letters, digits, _ or -');
    localStorage.setItem('chat.user', draftUser);
    localStorage.setItem('chat.chat', draftChat);
    setMe(draftUser);
    setChatId(draftChat);
  };

  const send = async () => {
    const body = text.trim();
    if (!body) return;
    // Cleared now, not when the answer comes: what is typed meanwhile stays.
    setText('');
    try {
      const message = await postMessage(chatId, me, body, randomId());
      dispatch({ kind: 'posted', message });
      requestAnimationFrame(() => list.current?.scrollTo({ top: list.current.scrollHeight }));
    } catch (e) {
      setError(words(e));
      setText((typed) => typed || body);
    }
  };

  const toggle = async (messageId: string, emoji: string, held: boolean) => {
    try {
      if (held) await removeReaction(chatId, messageId, me, emoji);
      else await addReaction(chatId, messageId, me, emoji);
      dispatch({ kind: 'mine', messageId, emoji, held: !held });
    } catch (e) {
      setError(words(e));
    }
  };

  void tick;
  const hotSeconds = hotUntil === null ? 0 : Math.max(0, Math.ceil((hotUntil - Date.now()) / 1000));
  return (
    <div className="app">
      <header>
        <form onSubmit={join} className="join">
          <label>
            Name <input aria-label="name" value={draftUser} onChange={(e) => setDraftUser(e.target.value)} />
          </label>
          <label>
            Chat <input aria-label="chat" value={draftChat} onChange={(e) => setDraftChat(e.target.value)} />
          </label>
          <button type="submit">Join</button>
        </form>
        <span className={`status ${status}`} data-testid="status">
          {status}
        </span>
      </header>
      {config?.auth && !config.devTokens && !token && (
        <form
          className="join"
          onSubmit={(e) => {
            e.preventDefault();
            setToken(pasted.trim());
            setTokenState({ token: pasted.trim(), expiresAt: Number.MAX_SAFE_INTEGER });
          }}
        >
          <label>
            This server needs a token <input aria-label="token" value={pasted} onChange={(e) => setPasted(e.target.value)} />
          </label>
          <button type="submit">Sign in</button>
        </form>
      )}
      <h1>
        #{chatId} <small>as {me}</small>
      </h1>
      {hotUntil !== null && (
        <div className="banner hot" role="status" data-testid="hot">
          This chat is hot: history is paused, retrying in {hotSeconds} s. New messages keep arriving live.
        </div>
      )}
      {error && (
        <div className="banner error" role="alert" data-testid="error">
          {error} <button onClick={() => setError(null)}>Dismiss</button>
        </div>
      )}
      <div
        className="messages"
        ref={list}
        data-testid="messages"
        onScroll={(e) => {
          if (e.currentTarget.scrollTop === 0) loadOlder();
        }}
      >
        {state.hasOlder && (
          <button className="older" onClick={loadOlder}>
            Load older messages
          </button>
        )}
        {state.messages.map((message) => {
          const shown = [...new Set([...EMOJIS, ...Object.keys(message.reactions)])];
          return (
            <article key={message.id} className={message.userId === me ? 'message own' : 'message'} data-id={message.id}>
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
                      onClick={() => void toggle(message.id, emoji, held)}
                    >
                      {emoji}
                      {count > 0 && <span className="count">{count}</span>}
                    </button>
                  );
                })}
              </div>
            </article>
          );
        })}
      </div>
      <form
        className="composer"
        onSubmit={(e) => {
          e.preventDefault();
          void send();
        }}
      >
        <input
          aria-label="message"
          placeholder="Message (Enter to send)"
          value={text}
          maxLength={4000}
          onChange={(e) => setText(e.target.value)}
        />
        <button type="submit">Send</button>
      </form>
    </div>
  );
}
