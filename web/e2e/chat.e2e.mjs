// End to end in a real headless Chromium against the real stack: this
// script starts chat-server (serving the built UI), publish-server and the
// scheduler on free ports, against the Kafka and Redis of KAFKA_BROKERS and
// REDIS_URL (`make test` starts them), then drives two browser contexts.

import { spawn } from 'node:child_process';
import { createHmac } from 'node:crypto';
import { mkdirSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const bin = (name) => path.join(process.env.CARGO_TARGET_DIR ?? path.join(root, 'target'), 'debug', name);
const artifacts = path.join(root, 'web', 'test-results');
const run = `${process.pid}-${Date.now()}`;
const children = new Map();
let failures = 0;
// What the pages' Content-Security-Policy refused: the UI must need none of it.
const violations = [];

function freePort() {
  return new Promise((resolve) => {
    const server = net.createServer();
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

async function until(what, test, ms = 30000) {
  const deadline = Date.now() + ms;
  for (;;) {
    try {
      if (await test()) return;
    } catch {
      // Not yet.
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

function start(name, env, binary = name) {
  const child = spawn(bin(binary), [], {
    env: { ...process.env, RUST_LOG: 'warn', ...env },
    stdio: ['ignore', 'inherit', 'inherit'],
  });
  children.set(name, child);
  return child;
}

async function stop(name) {
  const child = children.get(name);
  if (!child || child.exitCode !== null) return;
  const exited = new Promise((r) => child.once('exit', r));
  child.kill('SIGTERM');
  await exited;
  children.delete(name);
}

const ports = { chat: await freePort(), publish: await freePort(), scheduler: await freePort() };
// A topic, key prefix and projector group of this run's own: on a broker
// shared with other tests, a member that died in a shared group would stall
// this run's projector until the broker gives up on it.
const shared = {
  KAFKA_TOPIC: `web-e2e-${run}`,
  REDIS_KEY_PREFIX: `web-e2e-${run}`,
  PROJECTOR_GROUP: `web-e2e-${run}`,
};
const chatUrl = `http://127.0.0.1:${ports.chat}`;
const startPublish = () =>
  start('publish-server', {
    ...shared,
    PUBLISH_SERVER_LISTEN: `127.0.0.1:${ports.publish}`,
    CORS_ORIGINS: chatUrl,
  });

async function check(name, body) {
  const started = Date.now();
  try {
    await body();
    console.log(`ok   ${name} (${Date.now() - started} ms)`);
  } catch (error) {
    failures += 1;
    console.log(`FAIL ${name}: ${error.stack ?? error}`);
  }
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});

try {
  start('chat-server', {
    ...shared,
    CHAT_SERVER_LISTEN: `127.0.0.1:${ports.chat}`,
    WEB_DIR: path.join(root, 'web', 'dist'),
    PUBLIC_STREAM_URL: `http://127.0.0.1:${ports.publish}`,
    HOT_FETCH_BUDGET: '2',
    HOT_FETCH_BURST: '2',
    RETRY_AFTER_JITTER_SECS: '0',
  });
  await until('chat-server', async () => (await fetch(`${chatUrl}/readyz`)).ok);
  startPublish();
  await until('publish-server', async () => (await fetch(`http://127.0.0.1:${ports.publish}/readyz`)).ok);
  start('scheduler', { ...shared, SCHEDULER_LISTEN: `127.0.0.1:${ports.scheduler}`, HOT_THRESHOLD: '20', COOL_DOWN: '2' });
  await until('scheduler', async () => (await fetch(`http://127.0.0.1:${ports.scheduler}/readyz`)).ok);

  const room = 'e2e-room';
  // A page in a browser context of its own whose UI starts as `user` in `chat`.
  const pageAs = async (user, chat, options = {}) => {
    const context = await browser.newContext(options);
    await context.addInitScript(
      ([u, c]) => {
        localStorage.setItem('chat.user', u);
        localStorage.setItem('chat.chat', c);
      },
      [user, chat],
    );
    return context.newPage();
  };
  const open = async (user) => {
    const page = await pageAs(user, room, { viewport: { width: 390, height: 800 } });
    page.on('pageerror', (error) => console.log(`[${user}] page error: ${error}`));
    page.on('console', (message) => {
      if (message.text().includes('Content Security Policy')) violations.push(`[${user}] ${message.text()}`);
    });
    await page.goto(`${chatUrl}/`);
    await page.getByTestId('status').filter({ hasText: 'live' }).waitFor({ timeout: 15000 });
    return page;
  };
  const texts = (page) => page.locator('article .text').allTextContents();
  const say = async (page, text) => {
    await page.getByLabel('message').fill(text);
    await page.getByLabel('message').press('Enter');
    // Posted: the server's answer put it in the sender's own view.
    await page.locator('article .text', { hasText: text }).waitFor({ timeout: 5000 });
  };
  const article = (page, text) => page.locator('article', { has: page.locator('.text', { hasText: text }) });

  const alice = await open('alice');
  const bob = await open('bob');
  const sent = [];

  await check("two people see each other's messages within 1 s", async () => {
    for (const [from, to, text] of [
      [alice, bob, 'hello from alice'],
      [bob, alice, 'hi alice, bob here'],
    ]) {
      const pressed = Date.now();
      await say(from, text);
      sent.push(text);
      // Within 1 s of pressing Enter.
      const left = Math.max(1, 1000 - (Date.now() - pressed));
      await to.locator('article .text', { hasText: text }).waitFor({ timeout: left });
    }
  });

  await check("reactions show on both sides, one's own highlighted", async () => {
    await article(alice, 'hi alice, bob here').locator('[data-emoji="👍"]').click();
    await article(bob, 'hi alice, bob here').locator('[data-emoji="👍"] .count', { hasText: '1' }).waitFor({ timeout: 2000 });
    await article(alice, 'hi alice, bob here').locator('[data-emoji="👍"][aria-pressed="true"]').waitFor({ timeout: 2000 });
    await article(bob, 'hello from alice').locator('[data-emoji="🎉"]').click();
    await article(alice, 'hello from alice').locator('[data-emoji="🎉"] .count', { hasText: '1' }).waitFor({ timeout: 2000 });
    const pressed = await article(bob, 'hi alice, bob here').locator('[data-emoji="👍"]').getAttribute('aria-pressed');
    if (pressed !== 'false') throw new Error("bob's view highlights alice's reaction as his");
  });

  await check('a publish-server restart mid-conversation leaves both with the full history, nothing twice', async () => {
    await stop('publish-server');
    await bob.getByTestId('status').filter({ hasNotText: 'live' }).waitFor({ timeout: 5000 });
    for (const text of ['while the stream was down 1', 'while the stream was down 2']) {
      await say(alice, text);
      sent.push(text);
    }
    startPublish();
    await bob.getByTestId('status').filter({ hasText: 'live' }).waitFor({ timeout: 15000 });
    await say(bob, 'after the restart');
    sent.push('after the restart');
    for (const [name, page] of [['alice', alice], ['bob', bob]]) {
      await page.locator('article .text', { hasText: 'after the restart' }).waitFor({ timeout: 5000 });
      await until('the full history', async () => JSON.stringify(await texts(page)) === JSON.stringify(sent), 5000).catch(
        async () => {
          const events = await page.evaluate(() => JSON.stringify(window.chatEvents ?? []));
          throw new Error(
            `${name}'s history ${JSON.stringify(await texts(page))}, expected ${JSON.stringify(sent)}; stream actions: ${events}`,
          );
        },
      );
    }
  });

  await check('one page follows 8 chats over one connection, with unread counts, and a publish-server restart loses nothing', async () => {
    const rooms = Array.from({ length: 8 }, (_, i) => `${room}-k${i}`);
    const connections = async () => {
      const text = await (await fetch(`http://127.0.0.1:${ports.publish}/metrics`)).text();
      return Number(/^publish_connections (\S+)/m.exec(text)?.[1] ?? 'NaN');
    };
    // Each chat's posts by a user of its own, inside the write limit.
    const post = async (chat, text) => {
      const response = await fetch(`${chatUrl}/api/chats/${chat}/messages`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ userId: `gus-${chat}`, text }),
      });
      if (response.status !== 201) throw new Error(`posting to ${chat}: ${response.status}`);
    };
    const before = await connections();
    const context = await browser.newContext({ viewport: { width: 1000, height: 800 } });
    await context.addInitScript(
      ([joined]) => {
        localStorage.setItem('chat.user', 'fay');
        localStorage.setItem('chat.joined', JSON.stringify(joined));
        localStorage.setItem('chat.chat', joined[0]);
      },
      [rooms],
    );
    const fay = await context.newPage();
    try {
      fay.on('pageerror', (error) => console.log(`[fay] page error: ${error}`));
      await fay.goto(`${chatUrl}/`);
      await fay.getByTestId('status').filter({ hasText: 'live' }).waitFor({ timeout: 15000 });
      const opened = await connections();
      if (opened - before !== 1) throw new Error(`8 chats took ${opened - before} connections, expected 1`);
      for (const [i, chat] of rooms.entries()) await post(chat, `first in ${i}`);
      // Each chat's last message shows in the list at once; the 7 off
      // screen count one unread each.
      for (const [i, chat] of rooms.entries()) {
        await fay.locator(`[data-chat="${chat}"] .last`, { hasText: `first in ${i}` }).waitFor({ timeout: 3000 });
      }
      for (const chat of rooms.slice(1)) {
        await fay.locator(`[data-chat="${chat}"] [data-testid="unread"]`, { hasText: '1' }).waitFor({ timeout: 2000 });
      }
      if (await fay.locator(`[data-chat="${rooms[0]}"] [data-testid="unread"]`).count()) {
        throw new Error('the chat on screen counts unread messages');
      }
      // Switching chats does not reconnect.
      await fay.locator(`[data-chat="${rooms[3]}"] .open`).click();
      await fay.locator('article .text', { hasText: 'first in 3' }).waitFor({ timeout: 2000 });
      if (await fay.locator(`[data-chat="${rooms[3]}"] [data-testid="unread"]`).count()) throw new Error('opened, still unread');
      if ((await connections()) !== opened) throw new Error('switching chats reconnected');

      await stop('publish-server');
      for (const [i, chat] of rooms.entries()) await post(chat, `while down in ${i}`);
      startPublish();
      await fay.getByTestId('status').filter({ hasText: 'live' }).waitFor({ timeout: 15000 });
      for (const [i, chat] of rooms.entries()) await post(chat, `after the restart in ${i}`);
      for (const [i, chat] of rooms.entries()) {
        await fay.locator(`[data-chat="${chat}"] .open`).click();
        const want = [`first in ${i}`, `while down in ${i}`, `after the restart in ${i}`];
        await until(`${chat} whole`, async () => JSON.stringify(await texts(fay)) === JSON.stringify(want), 5000).catch(async () => {
          throw new Error(`${chat} holds ${JSON.stringify(await texts(fay))}, expected ${JSON.stringify(want)}`);
        });
      }
      // Joining a chat reconnects once: the new chat streams live, the kept
      // ones resume from the stream's position, still one connection.
      const added = `${room}-k8`;
      await fay.getByLabel('chat', { exact: true }).fill(added);
      await fay.getByRole('button', { name: 'Join', exact: true }).click();
      await fay.locator(`[data-chat="${added}"]`).waitFor({ timeout: 2000 });
      await fay.getByTestId('status').filter({ hasText: 'live' }).waitFor({ timeout: 15000 });
      await post(added, 'in the new chat');
      await post(rooms[0], 'after joining');
      await fay.locator('article .text', { hasText: 'in the new chat' }).waitFor({ timeout: 3000 });
      await fay.locator(`[data-chat="${rooms[0]}"] .last`, { hasText: 'after joining' }).waitFor({ timeout: 3000 });
      // Leaving one: the others go on.
      await fay.getByRole('button', { name: `leave ${rooms[1]}` }).click();
      await fay.locator(`[data-chat="${rooms[1]}"]`).waitFor({ state: 'detached', timeout: 2000 });
      await fay.getByTestId('status').filter({ hasText: 'live' }).waitFor({ timeout: 15000 });
      await post(rooms[2], 'after leaving');
      await fay.locator(`[data-chat="${rooms[2]}"] .last`, { hasText: 'after leaving' }).waitFor({ timeout: 3000 });
      await until('one connection again', async () => (await connections()) === opened, 5000);
      await fay.locator(`[data-chat="${rooms[0]}"] .open`).click();
      const want = ['first in 0', 'while down in 0', 'after the restart in 0', 'after joining'];
      await until(`${rooms[0]} whole after the reconnects`, async () => JSON.stringify(await texts(fay)) === JSON.stringify(want), 5000).catch(async () => {
        throw new Error(`${rooms[0]} holds ${JSON.stringify(await texts(fay))}, expected ${JSON.stringify(want)}`);
      });
      mkdirSync(artifacts, { recursive: true });
      await fay.screenshot({ path: path.join(artifacts, 'many-chats.png') });
      await fay.setViewportSize({ width: 390, height: 800 });
      await fay.screenshot({ path: path.join(artifacts, 'many-chats-phone.png') });
    } finally {
      // Closed whatever happened: its stream must not outlive the check.
      await context.close();
    }
  });

  await check('a member opening a hot chat gets its history at once from the snapshot, streams live, and reacts', async () => {
    // A crowd of members, each fetching once, well over the threshold
    // (20 clients a second) until answers come from the shared snapshot.
    let crowding = true;
    let fromSnapshot = 0;
    let member = 0;
    const crowdLoop = async () => {
      while (crowding) {
        member += 1;
        const response = await fetch(`${chatUrl}/api/chats/${room}/messages?limit=1&userId=crowd-${member}`);
        if (response.headers.has('snapshot-age-ms')) fromSnapshot += 1;
        if (response.status !== 200) throw new Error(`a crowd member got ${response.status}`);
        await response.arrayBuffer();
        await new Promise((r) => setTimeout(r, 10));
      }
    };
    const crowd = Promise.all([crowdLoop(), crowdLoop(), crowdLoop(), crowdLoop()]);
    let carol;
    try {
      await until('the chat to turn hot', async () => fromSnapshot > 0, 15000);
      carol = await open('carol');
      await carol.locator('article .text', { hasText: 'hello from alice' }).waitFor({ timeout: 3000 });
      if (await carol.getByTestId('hot').count()) throw new Error('a member of a hot chat is told its history is paused');
      await say(alice, 'live while hot');
      await carol.locator('article .text', { hasText: 'live while hot' }).waitFor({ timeout: 2000 });
      // Her own reaction shows as hers, and its count reaches alice.
      await article(carol, 'live while hot').locator('[data-emoji="🎉"]').click();
      await article(carol, 'live while hot').locator('[data-emoji="🎉"][aria-pressed="true"]').waitFor({ timeout: 2000 });
      await article(alice, 'live while hot').locator('[data-emoji="🎉"] .count', { hasText: '1' }).waitFor({ timeout: 3000 });
    } finally {
      // Stopped whatever happened, so a failure here does not spill into
      // the next check or outlive the servers.
      crowding = false;
      await crowd;
    }
    mkdirSync(artifacts, { recursive: true });
    await carol.screenshot({ path: path.join(artifacts, 'hot-chat.png'), fullPage: true });
    await alice.screenshot({ path: path.join(artifacts, 'chat.png'), fullPage: true });
  });

  await check('with authentication on, the UI signs in with a token and chats', async () => {
    const key = 'e2e-secret-of-enough-length-for-hs256';
    const auth = { chat: await freePort(), paste: await freePort(), publish: await freePort() };
    const authUrl = `http://127.0.0.1:${auth.chat}`;
    const pasteUrl = `http://127.0.0.1:${auth.paste}`;
    // A chat-server that checks tokens signed with `key`, streaming from the
    // publish-server started below.
    const startChatWithAuth = (name, port, env = {}) =>
      start(
        name,
        {
          ...shared,
          CHAT_SERVER_LISTEN: `127.0.0.1:${port}`,
          WEB_DIR: path.join(root, 'web', 'dist'),
          PUBLIC_STREAM_URL: `http://127.0.0.1:${auth.publish}`,
          AUTH_HMAC_KEY: key,
          PROJECTOR: 'false',
          ...env,
        },
        'chat-server',
      );
    startChatWithAuth('chat-server-auth', auth.chat, { DEV_TOKENS: 'true' });
    start(
      'publish-server-auth',
      {
        ...shared,
        PUBLISH_SERVER_LISTEN: `127.0.0.1:${auth.publish}`,
        CORS_ORIGINS: `${authUrl},${pasteUrl}`,
        AUTH_HMAC_KEY: key,
      },
      'publish-server',
    );
    await until('the servers with authentication', async () =>
      (await fetch(`${authUrl}/readyz`)).ok && (await fetch(`http://127.0.0.1:${auth.publish}/readyz`)).ok,
    );
    const refused = await fetch(`${authUrl}/api/chats/${room}/messages`);
    if (refused.status !== 401) throw new Error(`no token: ${refused.status}, expected 401`);
    const pages = [];
    for (const user of ['dora', 'emil']) {
      const page = await pageAs(user, room);
      await page.goto(`${authUrl}/`);
      await page.getByTestId('status').filter({ hasText: 'live' }).waitFor({ timeout: 15000 });
      pages.push(page);
    }
    // The history is readable with the token: what was said before shows.
    await pages[0].locator('article .text', { hasText: 'hello from alice' }).waitFor({ timeout: 5000 });
    await say(pages[0], 'signed in and talking');
    await pages[1].locator('article .text', { hasText: 'signed in and talking' }).waitFor({ timeout: 2000 });
    const author = await article(pages[1], 'signed in and talking').locator('.meta b').textContent();
    if (author !== 'dora') throw new Error(`posted as ${author}, expected dora (the token's user)`);

    // Without development tokens, a person pastes a token their identity
    // provider gave them: the UI is the token's user, whatever name it had.
    startChatWithAuth('chat-server-paste', auth.paste);
    await until('the server without development tokens', async () => (await fetch(`${pasteUrl}/readyz`)).ok);
    const b64url = (value) => Buffer.from(JSON.stringify(value)).toString('base64url');
    const unsigned = `${b64url({ alg: 'HS256', typ: 'JWT' })}.${b64url({ sub: 'fern', exp: Math.floor(Date.now() / 1000) + 600 })}`;
    const pasted = `${unsigned}.${createHmac('sha256', key).update(unsigned).digest('base64url')}`;
    const fern = await pageAs('guest-4242', room);
    await fern.goto(`${pasteUrl}/`);
    await fern.getByLabel('token').fill(pasted);
    await fern.getByRole('button', { name: 'Sign in' }).click();
    await fern.getByTestId('status').filter({ hasText: 'live' }).waitFor({ timeout: 15000 });
    await fern.locator('article .text', { hasText: 'signed in and talking' }).waitFor({ timeout: 5000 });
    await say(fern, 'pasted my token');
    const fernAuthor = await article(pages[0], 'pasted my token').locator('.meta b').textContent({ timeout: 5000 });
    if (fernAuthor !== 'fern') throw new Error(`posted as ${fernAuthor}, expected fern (the pasted token's sub)`);
    const heading = await fern.locator('h1 small').textContent();
    if (heading !== 'as fern') throw new Error(`the page says "${heading}", expected "as fern"`);
  });

  await check('the UI runs under its Content-Security-Policy with nothing refused', async () => {
    const page = await (await browser.newContext()).newPage();
    const response = await page.goto(`${chatUrl}/`);
    const policy = response.headers()['content-security-policy'] ?? '';
    if (!policy.includes("frame-ancestors 'none'")) throw new Error(`policy: ${policy}`);
    if (violations.length) throw new Error(`refused by the policy:\n${violations.join('\n')}`);
  });
} catch (error) {
  failures += 1;
  console.log(`FAIL setup: ${error.stack ?? error}`);
} finally {
  await browser.close();
  for (const name of [...children.keys()]) await stop(name);
}
console.log(failures ? `web e2e: ${failures} failed` : 'web e2e: all passed');
process.exit(failures ? 1 : 0);
