import { defineConfig } from 'vitest/config';

// In development (`npm run dev`) the API is chat-server's, on :8080.
export default defineConfig({
  server: { proxy: { '/api': 'http://127.0.0.1:8080' } },
  test: { environment: 'node', include: ['src/**/*.test.ts'] },
});
