// Redundant audio (RFC 2198 RED) with Chromium: two pages in a call; after 3 s of
// audio, Alice's page reports the payload bytes per audio packet it sends and
// receives. Chromium's stats name the primary codec (Opus) either way; with RED each
// packet carries the previous frame too, so it is about twice as large.
// Usage: node red.mjs <base-url>. Prints one JSON line last; exits non-zero on failure.
import { launch, open, playing, run } from './lib.mjs';

const base = process.argv[2];
const browser = await launch();

await run(browser, async (report) => {
  const alice = await open(browser, `${base}/?room=red&name=Alice&autojoin=1`);
  const bob = await open(browser, `${base}/?room=red&name=Bob&autojoin=1`);
  await playing(alice, 1);
  await playing(bob, 1);
  await alice.waitForTimeout(3000);
  Object.assign(report, await alice.evaluate(async () => {
    const out = {};
    const stats = await window.huddleMedia.pc.getStats();
    stats.forEach((s) => {
      if (s.kind !== 'audio' || (s.type !== 'inbound-rtp' && s.type !== 'outbound-rtp')) return;
      const packets = s.packetsReceived ?? s.packetsSent;
      const bytes = s.bytesReceived ?? s.bytesSent;
      out[s.type === 'inbound-rtp' ? 'in' : 'out'] = {
        packets,
        bytes_per_packet: packets ? bytes / packets : 0,
        codec: stats.get(s.codecId)?.mimeType,
      };
    });
    return out;
  }));
});
