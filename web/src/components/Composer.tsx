// Writing a message: cleared when sent, not when the answer comes, so what
// is typed meanwhile stays; given back if the post fails.

import { useState } from 'react';

interface Props {
  /** The server's limit, once known. */
  maxChars?: number;
  /** Posts the text; resolves false when it was not stored. */
  onSend: (text: string) => Promise<boolean>;
}

export function Composer({ maxChars, onSend }: Props) {
  const [text, setText] = useState('');
  const send = async () => {
    const body = text.trim();
    if (!body) return;
    setText('');
    if (!(await onSend(body))) setText((typed) => typed || body);
  };
  return (
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
        maxLength={maxChars}
        onChange={(e) => setText(e.target.value)}
      />
      <button type="submit">Send</button>
    </form>
  );
}
