// Drops and server restarts in the middle of a call, in headless Chromium: Alice and Bob
// are in a call with chat. Alice's connection is cut (TCP reset through a proxy): her
// page resumes the same session, says so, and sends what she typed meanwhile. Then the
// Rust test kills the server and starts it again (this script prints
// RESTART and waits for a line on stdin), then stops it with SIGTERM and starts it again
// (GRACEFUL_RESTART). Each time both pages tell the user what is happening (connection
// lost / server restarting), rejoin by themselves, say so, see each other's video playing
// again, and keep the chat history; chat goes on after each restart.
// Usage: node reconnect.mjs <base-url>. Prints one JSON line last; exits non-zero on failure.
import { dropProxy, handshake, launch, open, playing, run, shot } from './lib.mjs';

const base = process.argv[2];
const browser = await launch();

const texts = (page) => page.$$eval('#chat-log li .text', (els) => els.map((e) => e.textContent));
const waitTexts = (page, want) => page.waitForFunction(
  (want) => JSON.stringify([...document.querySelectorAll('#chat-log li .text')].map((e) => e.textContent)) === JSON.stringify(want),
  want, { timeout: 20000 },
).catch(async () => { throw new Error(`expected ${JSON.stringify(want)}, page shows ${JSON.stringify(await texts(page))}`); });
const say = async (page, t) => {
  await page.fill('#chat-input', t);
  await page.press('#chat-input', 'Enter');
};

await run(browser, async (report) => {
  // Alice reaches the server through a proxy that can drop her connection.
  const proxy = await dropProxy(base);
  const alice = await open(browser, `${proxy.url}/?room=restart&name=Alice&autojoin=1`);
  const bob = await open(browser, `${base}/?room=restart&name=Bob&autojoin=1`);
  await playing(alice, 1);
  await playing(bob, 1);
  await say(alice, 'before the drop');
  await waitTexts(bob, ['before the drop']);

  // Network drop: the session resumes (same sid), media never stopped, and a message
  // typed while disconnected is sent once the connection is back.
  const sid = await alice.evaluate(() => window.huddleMedia.mySid);
  proxy.cut();
  await alice.waitForFunction(() => document.body.dataset.connection !== 'connected', null, { timeout: 10000 });
  await say(alice, 'typed while offline');
  await alice.waitForFunction(() => window.huddleEvents.includes('Reconnected.'), null, { timeout: 20000 })
    .catch(async () => { throw new Error(`no resume: ${JSON.stringify(await alice.evaluate(() => window.huddleEvents))}`); });
  report.drop = {
    events: await alice.evaluate(() => window.huddleEvents),
    same_session: (await alice.evaluate(() => window.huddleMedia.mySid)) === sid,
  };
  await waitTexts(bob, ['before the drop', 'typed while offline']);
  await playing(alice, 1);
  await playing(bob, 1);
  report.drop.bob_chat = await texts(bob);
  await say(alice, 'before the restart');
  await waitTexts(bob, ['before the drop', 'typed while offline', 'before the restart']);
  const sidsBefore = await alice.evaluate(() => window.huddleMedia.mySid);

  await handshake('RESTART');
  // The pages rejoin as new sessions (the server lost its state): a new sid each.
  for (const page of [alice, bob]) {
    await page.waitForFunction(() => window.huddleEvents.includes('Rejoined the room.'), null, { timeout: 30000 })
      .catch(async () => { throw new Error(`no rejoin: ${JSON.stringify(await page.evaluate(() => window.huddleEvents))}`); });
  }
  report.events = { alice: await alice.evaluate(() => window.huddleEvents), bob: await bob.evaluate(() => window.huddleEvents) };
  report.new_session = (await alice.evaluate(() => window.huddleMedia.mySid)) !== sidsBefore;
  report.status = { alice: await alice.textContent('#status'), bob: await bob.textContent('#status') };
  await playing(alice, 1);
  await playing(bob, 1);
  report.video_after_restart = true;
  report.tiles = { alice: await alice.$$eval('.tile', (t) => t.length), bob: await bob.$$eval('.tile', (t) => t.length) };
  const history = ['before the drop', 'typed while offline', 'before the restart'];
  await waitTexts(alice, history);
  await waitTexts(bob, history);
  await say(bob, 'after the restart');
  const all = [...history, 'after the restart'];
  await waitTexts(alice, all);
  await waitTexts(bob, all);
  await shot(alice, 'reconnect-after-crash');

  // A graceful restart (SIGTERM): the server says it is going away before it goes.
  await handshake('GRACEFUL_RESTART');
  for (const page of [alice, bob]) {
    await page.waitForFunction(() => window.huddleEvents.filter((e) => e === 'Rejoined the room.').length === 2, null, { timeout: 30000 })
      .catch(async () => { throw new Error(`no second rejoin: ${JSON.stringify(await page.evaluate(() => window.huddleEvents))}`); });
  }
  await playing(alice, 1);
  await playing(bob, 1);
  await say(alice, 'after the second restart');
  all.push('after the second restart');
  await waitTexts(alice, all);
  await waitTexts(bob, all);
  report.events = { alice: await alice.evaluate(() => window.huddleEvents), bob: await bob.evaluate(() => window.huddleEvents) };
  report.chat = { alice: await texts(alice), bob: await texts(bob) };
  await shot(alice, 'reconnect-after-graceful-restart');
});
