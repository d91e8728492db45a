// "Last N" in the web demo: with a server started with sfu.last_n = 1, the third page
// receives the camera of only one of the other two; the held-back one's tile shows the
// avatar (class `paused`) titled as held back, because the SFU told the page
// (media_track_paused, reason last_n), instead of a frozen picture. Pinning that tile
// (its Pin button, media_pin) brings its camera back and holds the other one.
// Usage: node lastn.mjs <base-url>. Prints one JSON line last; exits non-zero on failure.
import { launch, open, run, shot } from './lib.mjs';

const [base] = process.argv.slice(2);
const browser = await launch();
await run(browser, async (report) => {
  const join = (name) => open(browser, `${base}/?room=lastn&name=${name}&autojoin=1`);
  await join('Alice');
  await join('Bob');
  const carol = await join('Carol');
  // Carol's two remote tiles, then one of them held back (the fake microphones beep, so
  // the latest speaker may change: any moment with a held-back tile will do).
  const tiles = () => carol.$$eval('.tile:not([data-sid="local"])', (els) => els.map((t) => ({
    paused: t.classList.contains('paused'),
    title: t.title,
    width: t.querySelector('video')?.videoWidth || 0,
  })));
  const end = Date.now() + 30000;
  let seen = [];
  while (Date.now() < end) {
    seen = await tiles();
    if (seen.length === 2 && seen.some((t) => t.paused) && seen.some((t) => !t.paused && t.width > 0)) break;
    await new Promise((r) => setTimeout(r, 250));
  }
  report.tiles = seen;
  await shot(carol, 'call-last-n');

  // Carol pins the held-back participant: that camera takes her one slot (media_pin)
  // and plays, and the other one is held back instead, whoever speaks.
  const sids = await carol.$$eval('.tile:not([data-sid="local"])', (els) => els.map((t) => ({
    sid: t.dataset.sid, paused: t.classList.contains('paused'),
  })));
  const held = sids.find((t) => t.paused);
  if (held) {
    await carol.click(`.tile[data-sid="${held.sid}"] .pin`);
    const until = Date.now() + 30000;
    let after = [];
    // Settled: the pinned tile plays and the other is held, for 2 s in a row.
    let since = 0;
    while (Date.now() < until) {
      after = await carol.$$eval('.tile:not([data-sid="local"])', (els) => els.map((t) => ({
        sid: t.dataset.sid,
        pinned: t.classList.contains('pinned'),
        paused: t.classList.contains('paused'),
        width: t.querySelector('video')?.videoWidth || 0,
      })));
      const pinned = after.find((t) => t.sid === held.sid);
      const other = after.find((t) => t.sid !== held.sid);
      const settled = pinned?.pinned && !pinned.paused && pinned.width > 0 && other?.paused;
      if (!settled) since = 0;
      else if (!since) since = Date.now();
      else if (Date.now() - since >= 2000) break;
      await new Promise((r) => setTimeout(r, 250));
    }
    report.pinned = { sid: held.sid, tiles: after, settled_ms: since ? Date.now() - since : 0 };
  }
});
