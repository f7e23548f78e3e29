// The server's settings and, where it wants tokens, the signed-in token: a
// development token for the name given, renewed a minute before it
// expires, or one the user pasted.

import { useEffect, useState } from 'react';
import { type Token, type UiConfig, devToken, fetchConfig, setToken } from '../api';

export interface Session {
  config: UiConfig | null;
  token: Token | null;
  /** Where to stream from, once streaming may start (signed in if need be). */
  streamUrl: string | null;
  /** Signs in with a token the user has. */
  signIn: (token: string) => void;
}

export function useSession(me: string, onError: (error: unknown) => void): Session {
  const [config, setConfig] = useState<UiConfig | null>(null);
  const [token, setTokenState] = useState<Token | null>(null);

  useEffect(() => {
    fetchConfig().then(setConfig, onError);
  }, [onError]);

  useEffect(() => {
    if (!config?.auth || !config.devTokens) return;
    let timer: ReturnType<typeof setTimeout> | undefined;
    let cancelled = false;
    const signIn = () =>
      devToken(me).then((fresh) => {
        if (cancelled) return;
        setToken(fresh.token);
        setTokenState(fresh);
        const renewIn = Math.max(5, fresh.expiresAt - Date.now() / 1000 - 60) * 1000;
        timer = setTimeout(signIn, renewIn);
      }, onError);
    void signIn();
    return () => {
      cancelled = true;
      clearTimeout(timer);
    };
  }, [config, me, onError]);

  const signIn = (pasted: string) => {
    setToken(pasted);
    setTokenState({ token: pasted, expiresAt: Number.MAX_SAFE_INTEGER });
  };
  const streamUrl = config && (!config.auth || token) ? config.streamUrl : null;
  return { config, token, streamUrl, signIn };
}
