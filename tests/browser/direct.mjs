// One-to-one calls in the web demo, in headless Chromium: Alice and Bob go online under
// their handles; a call to someone offline says so; Alice calls Bob, Bob's page rings and
// he declines, Alice is told; she calls again, Bob accepts with the keyboard, both end up
// in the same two-person room seeing each other's video; Bob hangs up and Alice's page
// says so and leaves the call.
// Usage: node direct.mjs <base-url>. Prints one JSON line last; exits non-zero on failure.
import { launch, open, playing, run, shot, text } from './lib.mjs';

const base = process.argv[2];
const browser = await launch();

const online = async (name, handle) => {
  const page = await open(browser, `${base}/?name=${name}&me=${handle}`);
  await page.click('#direct summary');
  await page.click('#go-online');
  await page.waitForFunction(() => document.querySelector('#status').textContent === 'connected'
    || document.body.dataset.connection === 'connected', null, { timeout: 10000 });
  await page.waitForSelector('#call-form', { state: 'visible' });
  return page;
};
const callState = (page) => page.evaluate(() => window.huddleDirect.state);
const dialogText = (page) => page.waitForSelector('#call-dialog[open]').then(() => text(page, '#call-text'));
const place = async (page, handle) => {
  await page.fill('#callee', handle);
  await page.click('#call');
};

await run(browser, async (report) => {
  const alice = await online('Alice', 'alice');
  const bob = await online('Bob', 'bob');

  await place(alice, 'nobody');
  await alice.waitForFunction(() => document.querySelector('#call-text').textContent.includes('not online'));
  report.offline = await dialogText(alice);
  await alice.click('#call-close');

  // Ring, decline.
  await place(alice, 'bob');
  report.incoming = await dialogText(bob);
  await alice.waitForFunction(() => document.querySelector('#call-text').textContent.startsWith('Ringing'), null, { timeout: 10000 });
  report.caller_sees = await text(alice, '#call-text');
  report.states_ringing = { alice: await callState(alice), bob: await callState(bob) };
  await shot(bob, 'direct-incoming');
  await bob.click('#call-reject');
  await alice.waitForFunction(() => document.querySelector('#call-text').textContent.includes('declined'), null, { timeout: 10000 });
  report.declined = await text(alice, '#call-text');
  report.states_declined = { alice: await callState(alice), bob: await callState(bob) };
  await alice.click('#call-close');

  // Ring, accept with the keyboard (focus starts on Accept).
  await place(alice, 'bob');
  await bob.waitForSelector('#call-dialog[open]');
  report.focus_on_ring = await bob.evaluate(() => document.activeElement?.id);
  await bob.keyboard.press('Enter');
  await alice.waitForSelector('#room-view', { state: 'visible', timeout: 10000 });
  await bob.waitForSelector('#room-view', { state: 'visible', timeout: 10000 });
  await playing(alice, 1);
  await playing(bob, 1);
  report.in_call = {
    alice_label: await text(alice, '#room-label'),
    bob_label: await text(bob, '#room-label'),
    rooms: [await alice.evaluate(() => window.huddleDirect.call.room), await bob.evaluate(() => window.huddleDirect.call.room)],
    alice_sees: await alice.$eval('.tile:not([data-sid="local"]) .name', (e) => e.textContent),
    bob_sees: await bob.$eval('.tile:not([data-sid="local"]) .name', (e) => e.textContent),
    states: { alice: await callState(alice), bob: await callState(bob) },
  };
  await shot(alice, 'direct-in-call');

  // Bob hangs up: Alice is told and leaves the call room.
  await bob.click('#leave');
  await alice.waitForSelector('#prejoin-view', { state: 'visible', timeout: 10000 });
  report.after_hangup = {
    alice_notice: await alice.evaluate(() => window.huddleEvents.at(-1)),
    states: { alice: await callState(alice), bob: await callState(bob) },
    bob_prejoin: await bob.isVisible('#prejoin-view'),
  };
  // Both are still online and can call again.
  await place(bob, 'alice');
  report.call_back = await dialogText(alice);
  await alice.click('#call-reject');
});
