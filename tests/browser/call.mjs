// Calls through huddle's SFU in headless Chromium with fake camera and microphone: two
// pages each see the other's video playing (videoWidth > 0 and currentTime advancing) and
// receive audio packets; with a third page everyone sees two remote tiles; when one page
// leaves, the others' grids drop its tile. `relay` as the second argument makes the
// pages use only TURN relay candidates (URL option relay=1). Screenshot: target/e2e/.
// Usage: node call.mjs <base-url> [relay|direct] [publisher-cap-bps]. Prints one JSON line
// last; exits non-zero on failure.
import { chromium } from 'playwright-core';
import { shot } from './lib.mjs';

const [base, mode, cap] = process.argv.slice(2);
// The server's sfu.max_publisher_bitrate, if set: each page's send budget must come
// down to it.
const publisherCap = cap ? Number(cap) : 0;
const relay = mode === 'relay' ? '&relay=1' : '';
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
    '--use-fake-ui-for-media-stream', '--use-fake-device-for-media-stream',
    '--autoplay-policy=no-user-gesture-required'],
});
const remoteTiles = (page) => page.$$eval('.tile:not([data-sid="local"])', (els) => els.length);
// Every remote video has a picture and plays on.
const playing = (page, n) => page.waitForFunction((n) => {
  const vids = [...document.querySelectorAll('.tile:not([data-sid="local"]) video')];
  const now = vids.map((v) => v.currentTime);
  const prev = window.__prevTimes || [];
  window.__prevTimes = now;
  return vids.length === n && prev.length === n
    && vids.every((v, i) => v.videoWidth > 0 && now[i] > prev[i]);
}, n, { timeout: 30000, polling: 500 }).catch(async () => {
  const state = await page.evaluate(() => ({
    tiles: [...document.querySelectorAll('.tile')].map((t) => t.dataset.sid),
    widths: [...document.querySelectorAll('.tile video')].map((v) => v.videoWidth),
    connection: document.querySelector('#grid')?.dataset.connection,
    error: document.querySelector('#error')?.textContent,
  }));
  throw new Error(`expected ${n} playing remote videos: ${JSON.stringify(state)}`);
});
const inbound = (page) => page.evaluate(async () => {
  const out = { audio: 0, video: 0, candidate: null, available_outgoing_bps: null };
  const stats = await window.huddleMedia.pc.getStats();
  stats.forEach((s) => {
    if (s.type === 'inbound-rtp') out[s.kind] += s.packetsReceived;
    if (s.type === 'transport' && s.selectedCandidatePairId) {
      const pair = stats.get(s.selectedCandidatePairId);
      out.candidate = pair && stats.get(pair.localCandidateId)?.candidateType;
      // The browser's send budget: its own estimate, capped by any REMB the SFU sent.
      out.available_outgoing_bps = pair?.availableOutgoingBitrate ?? null;
    }
  });
  return out;
});
// The send budget once it is at most `cap` (a REMB arrives about a second after media
// starts), or the last one seen after 10 s.
const sendBudget = async (page, cap) => {
  let last = null;
  for (let i = 0; i < 20; i++) {
    last = (await inbound(page)).available_outgoing_bps;
    if (last !== null && last <= cap) break;
    await new Promise((r) => setTimeout(r, 500));
  }
  return last;
};
const report = {};
try {
  const open = async (name) => {
    const page = await (await browser.newContext()).newPage();
    await page.goto(`${base}/?room=call&name=${name}&autojoin=1${relay}`);
    return page;
  };
  const alice = await open('Alice');
  const bob = await open('Bob');
  await playing(alice, 1);
  await playing(bob, 1);
  report.two = { alice: await inbound(alice), bob: await inbound(bob) };
  if (publisherCap) {
    report.send_budget = { alice: await sendBudget(alice, publisherCap), bob: await sendBudget(bob, publisherCap) };
  }
  const carol = await open('Carol');
  await playing(carol, 2);
  await playing(alice, 2);
  await playing(bob, 2);
  await shot(alice, `call-three-${mode || 'direct'}`);
  report.three = {
    alice: await remoteTiles(alice),
    bob: await remoteTiles(bob),
    carol: await remoteTiles(carol),
  };
  await carol.click('#leave');
  await alice.waitForFunction(() => document.querySelectorAll('.tile:not([data-sid="local"])').length === 1, null, { timeout: 15000 });
  await bob.waitForFunction(() => document.querySelectorAll('.tile:not([data-sid="local"])').length === 1, null, { timeout: 15000 });
  await playing(alice, 1);
  report.after_leave = { alice: await remoteTiles(alice), bob: await remoteTiles(bob) };
  report.ok = true;
} catch (e) {
  report.error = String(e);
} finally {
  await browser.close();
  console.log(JSON.stringify(report));
  process.exit(report.ok ? 0 : 1);
}
