// Chromium over the HTTP/2 front (scripts/nginx-test.sh starts it): the
// UI loads and goes live, and the same page opens 8 more event streams,
// all on one connection. Over HTTP/1.1 a page gets 6 connections per
// origin, and the seventh stream would hang.
//   node web/e2e/http2.e2e.mjs https://127.0.0.1:PORT

import { chromium } from 'playwright-core';

const origin = process.argv[2];
if (!origin) {
  console.log('usage: node web/e2e/http2.e2e.mjs ORIGIN');
  process.exit(2);
}
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--ignore-certificate-errors', '--disable-background-networking'],
});
let failed = false;
try {
  const context = await browser.newContext({ ignoreHTTPSErrors: true });
  await context.addInitScript(() => {
    localStorage.setItem('chat.user', 'h2-user');
    localStorage.setItem('chat.chat', 'h2-room');
  });
  const page = await context.newPage();
  await page.goto(`${origin}/`);
  await page.getByTestId('status').filter({ hasText: 'live' }).waitFor({ timeout: 15000 });
  const opened = await page.evaluate(async () => {
    const protocol = performance.getEntriesByType('navigation')[0]?.nextHopProtocol;
    const streams = Array.from({ length: 8 }, (_, i) => new EventSource(`/api/chats/h2-k${i}/events`));
    const open = await Promise.all(
      streams.map(
        (source) =>
          new Promise((resolve) => {
            source.onopen = () => resolve(true);
            setTimeout(() => resolve(false), 10000);
          }),
      ),
    );
    for (const source of streams) source.close();
    return { protocol, open: open.filter(Boolean).length };
  });
  if (opened.protocol !== 'h2') throw new Error(`the page came over ${opened.protocol}, expected h2`);
  if (opened.open !== 8) throw new Error(`${opened.open} of 8 streams opened beside the UI's`);
  console.log('ok   Chromium over the HTTP/2 front: the UI is live and 8 more streams open in the same page');
} catch (error) {
  failed = true;
  console.log(`FAIL Chromium over the HTTP/2 front: ${error.message ?? error}`);
} finally {
  await browser.close();
}
process.exit(failed ? 1 : 0);
