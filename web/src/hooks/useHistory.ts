// Pages of a chat's history from the fetch API. A 429 (a hot chat) waits
// for its Retry-After and tries once more then; `hotUntil` says until when.

import { type Dispatch, useCallback, useEffect, useRef, useState } from 'react';
import { ApiError, fetchPage } from '../api';
import type { Action } from '../chat';

export type Where = { before?: string; after?: string };

export interface History {
  load: (where: Where, older: boolean) => Promise<void>;
  /** When a throttled fetch is tried again (ms since the epoch), or null. */
  hotUntil: number | null;
}

export function useHistory(chatId: string, me: string, dispatch: Dispatch<Action>, onError: (error: unknown) => void): History {
  const [hotUntil, setHotUntil] = useState<number | null>(null);
  const retry = useRef<ReturnType<typeof setTimeout> | undefined>(undefined);
  const loading = useRef(false);

  const load = useCallback(
    async (where: Where, older: boolean) => {
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
          onError(e);
        }
      } finally {
        loading.current = false;
      }
    },
    [chatId, me, dispatch, onError],
  );

  useEffect(() => () => clearTimeout(retry.current), [chatId, me]);
  return { load, hotUntil };
}
