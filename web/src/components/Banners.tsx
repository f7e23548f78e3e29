// What the user must know now: a hot chat's paused history, an error.

export function HotBanner({ seconds }: { seconds: number }) {
  return (
    <div className="banner hot" role="status" data-testid="hot">
      This chat is hot: history is paused, retrying in {seconds} s. New messages keep arriving live.
    </div>
  );
}

export function ErrorBanner({ error, onDismiss }: { error: string; onDismiss: () => void }) {
  return (
    <div className="banner error" role="alert" data-testid="error">
      {error} <button onClick={onDismiss}>Dismiss</button>
    </div>
  );
}
