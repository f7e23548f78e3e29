// The chat's event stream: opened live (or from the last event seen, when
// a fresh token reopens it), its actions handed on, its state told.

import { useEffect, useRef, useState } from 'react';
import { type Status, type StreamAction, openStream } from '../stream';

export function useStream(
  streamUrl: string | null,
  chatId: string,
  from: () => string | null,
  bearer: string | null,
  onAction: (action: StreamAction) => void,
): Status {
  const [status, setStatus] = useState<Status>('connecting');
  // Read when an action comes, so it sees the latest render's state.
  const handler = useRef(onAction);
  handler.current = onAction;
  useEffect(() => {
    if (!streamUrl) return;
    const close = openStream(
      streamUrl,
      chatId,
      from(),
      {
        onStatus: setStatus,
        onAction: (action) => {
          // The last stream actions, for a look from the browser's console.
          const log = ((window as { chatEvents?: unknown[] }).chatEvents ??= []);
          log.push(action);
          if (log.length > 200) log.shift();
          handler.current(action);
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
    // `from` is read when the stream opens: a new stream opens only for a
    // new chat, server or token.
  }, [chatId, streamUrl, bearer]);
  return status;
}
