// Room chat in the web demo, in headless Chromium: two pages (separate browser contexts,
// so separate tabs and identities) join a room; messages typed in one appear in the other
// in order and are marked sent; a reloaded page shows the history; the unread badge counts
// messages while the chat is hidden; after the server restarts (the Rust test does it when
// this script prints RESTART and waits for a line on stdin) both pages reconnect by
// themselves and chat goes on with the history intact.
// Usage: node chat.mjs <base-url>. Prints one JSON line last; exits non-zero on failure.
import { handshake, launch, run } from './lib.mjs';

const base = process.argv[2];
// No camera or microphone: chat only.
const browser = await launch([]);
const texts = (page) => page.$$eval('#chat-log li .text', (els) => els.map((e) => e.textContent));
const states = (page) => page.$$eval('#chat-log li.mine', (els) => els.map((e) => e.dataset.state || 'history'));
const waitTexts = (page, want) => page.waitForFunction(
  (want) => JSON.stringify([...document.querySelectorAll('#chat-log li .text')].map((e) => e.textContent)) === JSON.stringify(want),
  want, { timeout: 15000 },
).catch(async () => { throw new Error(`expected ${JSON.stringify(want)}, page shows ${JSON.stringify(await texts(page))}`); });
const say = async (page, text) => {
  await page.fill('#chat-input', text);
  await page.press('#chat-input', 'Enter');
};
await run(browser, async (report) => {
  const open = async (name) => {
    const page = await (await browser.newContext()).newPage();
    await page.goto(`${base}/?room=chatroom&name=${name}&autojoin=1`);
    await page.waitForFunction(() => document.querySelector('#status')?.textContent === 'connected');
    return page;
  };
  const alice = await open('Alice');
  const bob = await open('Bob');
  await bob.waitForFunction(() => document.querySelectorAll('#participants li').length === 2);
  for (const t of ['one', 'two', 'three']) await say(alice, t);
  await waitTexts(bob, ['one', 'two', 'three']);
  await alice.waitForFunction(() => [...document.querySelectorAll('#chat-log li.mine')].every((e) => e.dataset.state === 'sent'));
  report.alice_states = await states(alice);
  await say(bob, 'four');
  await waitTexts(alice, ['one', 'two', 'three', 'four']);
  // A reload shows the history; the tab keeps its identity, so "four" is still Bob's own.
  await bob.reload();
  await waitTexts(bob, ['one', 'two', 'three', 'four']);
  report.bob_after_reload = await texts(bob);
  report.bob_own_after_reload = await bob.$$eval('#chat-log li.mine .text', (els) => els.map((e) => e.textContent));
  // Unread badge while Alice's chat is hidden.
  await alice.click('#chat-toggle');
  await say(bob, 'five');
  await alice.waitForFunction(() => document.querySelector('#chat-unread')?.textContent === '1');
  report.unread_while_hidden = await alice.textContent('#chat-unread');
  await alice.click('#chat-toggle');
  report.unread_badge_hidden_after_open = await alice.$eval('#chat-unread', (e) => e.hidden);
  await waitTexts(alice, ['one', 'two', 'three', 'four', 'five']);
  // Server restart: the pages reconnect and resync by themselves.
  await handshake('RESTART');
  await alice.waitForFunction(() => document.querySelector('#status')?.textContent === 'connected', null, { timeout: 20000 });
  await bob.waitForFunction(() => document.querySelector('#status')?.textContent === 'connected', null, { timeout: 20000 });
  await say(alice, 'after restart');
  const all = ['one', 'two', 'three', 'four', 'five', 'after restart'];
  await waitTexts(bob, all);
  await waitTexts(alice, all);
  report.after_restart_bob = await texts(bob);
  report.after_restart_alice = await texts(alice);
});
