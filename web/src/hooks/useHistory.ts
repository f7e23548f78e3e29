// Pages of the chats' history from the fetch API. A 429 (a client over its
// budget in a hot chat) waits for its Retry-After and tries once more then;
// `hotUntil` says until when.

import { type Dispatch, useCallback, useEffect, useRef, useState } from 'react';
import { ApiError, fetchPage } from '../api';
import type { Action } from '../chat';

export type Where = { before?: string; after?: string };

export interface History {
  load: (chatId: string, where: Where, older: boolean) => Promise<void>;
  /** When a throttled fetch is tried again (ms since the epoch), or null. */
  hotUntil: number | null;
}

/** `named`: the `userId` to send, or null where the token says who. */
export function useHistory(named: string | null, dispatch: Dispatch<Action>, onError: (error: unknown) => void): History {
  const [hotUntil, setHotUntil] = useState<number | null>(null);
  const retries = useRef(new Map<string, ReturnType<typeof setTimeout>>());
  const loading = useRef(new Set<string>());

  const load = useCallback(
    async (chatId: string, where: Where, older: boolean) => {
      const key = `${chatId}\n${older}`;
      if (loading.current.has(key)) return;
      loading.current.add(key);
      clearTimeout(retries.current.get(key));
      try {
        const page = await fetchPage(chatId, named, where);
        dispatch({ kind: 'page', page, older });
        setHotUntil(null);
      } catch (e) {
        if (e instanceof ApiError && e.status === 429) {
          const wait = (e.retryAfter ?? 1) * 1000;
          setHotUntil(Date.now() + wait);
          retries.current.set(
            key,
            setTimeout(() => void load(chatId, where, older), wait),
          );
        } else {
          onError(e);
        }
      } finally {
        loading.current.delete(key);
      }
    },
    [named, dispatch, onError],
  );

  useEffect(() => {
    const pending = retries.current;
    return () => {
      for (const timer of pending.values()) clearTimeout(timer);
      pending.clear();
    };
  }, [named]);
  return { load, hotUntil };
}
