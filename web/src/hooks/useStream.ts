// One event stream for every joined chat: opened live, reopened from the
// last position when the chats or the token change (kept chats resume from
// it, new ones start live), its actions handed on, its state told.

import { useEffect, useRef, useState } from 'react';
import { type Status, type StreamAction, openStream } from '../stream';

export function useStream(
  streamUrl: string | null,
  chatIds: string[],
  bearer: string | null,
  onAction: (action: StreamAction) => void,
): Status {
  const [status, setStatus] = useState<Status>('connecting');
  // Read when an action comes, so it sees the latest render's state.
  const handler = useRef(onAction);
  handler.current = onAction;
  // The stream's position, kept across reopenings.
  const position = useRef<string | null>(null);
  const key = chatIds.join('\n');
  useEffect(() => {
    if (!streamUrl || !key) return;
    const close = openStream(
      streamUrl,
      key.split('\n'),
      position.current,
      {
        onStatus: setStatus,
        onPosition: (at) => {
          position.current = at;
        },
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
  }, [key, streamUrl, bearer]);
  return status;
}
