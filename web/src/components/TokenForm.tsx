// Signing in with a token the user has, where the server wants tokens and
// gives no development ones.

import { useState } from 'react';

export function TokenForm({ onToken }: { onToken: (token: string) => void }) {
  const [pasted, setPasted] = useState('');
  return (
    <form
      className="join"
      onSubmit={(e) => {
        e.preventDefault();
        onToken(pasted.trim());
      }}
    >
      <label>
        This server needs a token <input aria-label="token" value={pasted} onChange={(e) => setPasted(e.target.value)} />
      </label>
      <button type="submit">Sign in</button>
    </form>
  );
}
