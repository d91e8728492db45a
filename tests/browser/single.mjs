// A one-to-one call in the web demo where Alice's browser sends its camera as one stream
// (the page's simulcast encodings are dropped, as by a browser that does not offer
// simulcast) and Bob's budget is capped by the server (sfu.max_subscriber_bitrate): the
// SFU tells Alice by REMB what Bob has room for, so her browser's send budget comes
// down to it, and her camera plays at Bob's.
// Usage: node single.mjs <base-url> <subscriber-cap-bps>. Prints one JSON line last;
// exits non-zero on failure.
import { launch, open, playing, run, shot } from './lib.mjs';

const [base, cap] = process.argv.slice(2);
const browser = await launch();
await run(browser, async (report) => {
  const ctx = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  await ctx.addInitScript(() => {
    const add = RTCPeerConnection.prototype.addTransceiver;
    RTCPeerConnection.prototype.addTransceiver = function (track, init) {
      if (init) delete init.sendEncodings;
      return add.call(this, track, init);
    };
  });
  const alice = await ctx.newPage();
  alice.on('pageerror', (e) => console.error(`page error: ${e}`));
  await alice.goto(`${base}/?room=single&name=Alice&autojoin=1`);
  const bob = await open(browser, `${base}/?room=single&name=Bob&autojoin=1`);
  // Bob has Alice's tile (whether her camera plays there yet depends on the cap).
  await bob.waitForSelector('.tile:not([data-sid="local"]) video', { timeout: 30000 });
  const sent = () => alice.evaluate(async () => {
    const out = { streams: 0, rids: [], budget_bps: null, bytes: 0 };
    const pc = window.huddleMedia?.pc;
    if (!pc) return out;
    const stats = await pc.getStats();
    stats.forEach((s) => {
      if (s.type === 'outbound-rtp' && s.kind === 'video' && s.bytesSent > 0) {
        out.streams += 1;
        out.bytes += s.bytesSent;
        if (s.rid) out.rids.push(s.rid);
      }
      if (s.type === 'transport' && s.selectedCandidatePairId) {
        // The browser's send budget: its own estimate, capped by any REMB it got.
        out.budget_bps = stats.get(s.selectedCandidatePairId)?.availableOutgoingBitrate ?? null;
      }
    });
    return out;
  });
  report.first = await sent();
  for (let i = 0; i < 60 && report.first.streams === 0; i++) {
    await new Promise((r) => setTimeout(r, 500));
    report.first = await sent();
  }
  // The budget comes down to Bob's room once Alice's camera sends more than it.
  const budgets = [];
  const end = Date.now() + 40000;
  let last = report.first;
  while (Date.now() < end) {
    last = await sent();
    budgets.push(last.budget_bps);
    if (last.budget_bps !== null && last.budget_bps <= Number(cap)) break;
    await new Promise((r) => setTimeout(r, 500));
  }
  report.alice = last;
  report.budgets = budgets;
  // Alice's camera, sent within that budget, plays at Bob's: it was paused there while
  // it sent more than the cap allows, and is resumed once it fits (after the SFU's
  // upgrade hold, at a keyframe). Frames decoded, not the video element's clock, which
  // runs on while the picture stands still.
  const decoded = () => bob.evaluate(async () => {
    let frames = 0;
    (await window.huddleMedia.pc.getStats()).forEach((s) => {
      if (s.type === 'inbound-rtp' && s.kind === 'video') frames += s.framesDecoded || 0;
    });
    return frames;
  });
  const resumeBy = Date.now() + 20000;
  let framesBefore = await decoded();
  for (;;) {
    await new Promise((r) => setTimeout(r, 500));
    const now = await decoded();
    if (now > framesBefore + 5) break;
    framesBefore = now;
    if (Date.now() > resumeBy) break;
  }
  report.resumed_after_ms = Date.now() - (resumeBy - 20000);
  await playing(bob, 1);
  const before = (await sent()).bytes;
  framesBefore = await decoded();
  const t0 = Date.now();
  await new Promise((r) => setTimeout(r, 4000));
  const after = await sent();
  const seconds = (Date.now() - t0) / 1000;
  report.alice_video_bps = Math.round(((after.bytes - before) * 8) / seconds);
  report.bob_fps = Math.round(((await decoded()) - framesBefore) / seconds);
  report.alice_budget_after = after.budget_bps;
  report.bob_width = await bob.$eval('.tile:not([data-sid="local"]) video', (v) => v.videoWidth);
  await shot(bob, 'call-one-stream');
});
