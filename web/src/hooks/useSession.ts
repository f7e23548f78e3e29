// The server's settings and, where it wants tokens, the signed-in token: a
// development token for the name given, renewed a minute before it
// expires, or one the user pasted.

import { useEffect, useState } from 'react';
import { type Token, type UiConfig, devToken, fetchConfig, readToken, setToken } from '../api';

export interface Session {
  config: UiConfig | null;
  token: Token | null;
  /** Where to stream from, once streaming may start (signed in if need be). */
  streamUrl: string | null;
  /** Signs in with a token the user has. */
  signIn: (token: string) => void;
  /**
   * The user who speaks: the token's, where the server wants tokens, else
   * the name given.
   */
  user: string;
  /** The `userId` to name in requests: none where a token says who. */
  named: string | null;
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
    const read = readToken(pasted);
    if (!read) {
      onError(new Error('that is not a token: a JWT has three parts, and its payload names the user (sub)'));
      return;
    }
    setToken(pasted);
    setTokenState(read);
  };
  const streamUrl = config && (!config.auth || token) ? config.streamUrl : null;
  const user = config?.auth && token ? token.userId : me;
  const named = config?.auth ? null : me;
  return { config, token, streamUrl, signIn, user, named };
}
