// Calls through huddle's SFU in headless Chromium with fake camera and microphone: two
// pages each see the other's video playing (videoWidth > 0, new frames shown),
// receive audio packets and send their camera in simulcast layers (rids with bytes
// sent), and a page asks for the layer its tiles need; with a third page everyone sees
// two remote tiles; when one page leaves, the others' grids drop its tile. `relay` as the second argument makes the
// pages use only TURN relay candidates (URL option relay=1); `tcp` drops the SFU's UDP
// candidates from every description the pages get, as a network that blocks UDP would
// leave them only the SFU's ICE-TCP candidate. Screenshot: target/e2e/.
// Usage: node call.mjs <base-url> [relay|direct|tcp] [publisher-cap-bps]. Prints one JSON
// line last; exits non-zero on failure.
import { launch, playing, shot } from './lib.mjs';

const [base, mode, cap] = process.argv.slice(2);
// The server's sfu.max_publisher_bitrate, if set: each page's send budget must come
// down to it.
const publisherCap = cap ? Number(cap) : 0;
const relay = mode === 'relay' ? '&relay=1' : '';
const browser = await launch();
const remoteTiles = (page) => page.$$eval('.tile:not([data-sid="local"])', (els) => els.length);
const inbound = (page) => page.evaluate(async () => {
  const out = { audio: 0, video: 0, candidate: null, available_outgoing_bps: null };
  const stats = await window.huddleMedia.pc.getStats();
  stats.forEach((s) => {
    if (s.type === 'inbound-rtp') out[s.kind] += s.packetsReceived;
    if (s.type === 'transport' && s.selectedCandidatePairId) {
      const pair = stats.get(s.selectedCandidatePairId);
      out.candidate = pair && stats.get(pair.localCandidateId)?.candidateType;
      out.protocol = pair && stats.get(pair.remoteCandidateId)?.protocol;
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
// The simulcast layers a page sends: rids of outbound video with bytes sent.
const layersSent = (page) => page.evaluate(async () => {
  const rids = [];
  const stats = await window.huddleMedia.pc.getStats();
  stats.forEach((s) => {
    if (s.type === 'outbound-rtp' && s.kind === 'video' && s.bytesSent > 0) rids.push(s.rid || '');
  });
  return rids.sort();
});
// What the page's camera sends per simulcast layer: width and why the encoder holds
// back, if it does (`qualityLimitationReason`: cpu, bandwidth, none).
const layerWidths = (page) => page.evaluate(async () => {
  const out = {};
  (await window.huddleMedia.pc.getStats()).forEach((s) => {
    if (s.type === 'outbound-rtp' && s.kind === 'video') {
      out[s.rid || '-'] = { width: s.frameWidth || 0, limited: s.qualityLimitationReason || '' };
    }
  });
  return out;
});
const report = {};
try {
  const open = async (name) => {
    const context = await browser.newContext();
    if (mode === 'tcp') {
      await context.addInitScript(() => {
        const set = RTCPeerConnection.prototype.setRemoteDescription;
        RTCPeerConnection.prototype.setRemoteDescription = function (desc) {
          const udp = (l) => l.startsWith('a=candidate:') && l.split(' ')[2].toLowerCase() === 'udp';
          const sdp = desc?.sdp && desc.sdp.split('\r\n').filter((l) => !udp(l)).join('\r\n');
          return set.call(this, sdp ? { type: desc.type, sdp } : desc);
        };
      });
    }
    const page = await context.newPage();
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
  } else if (mode !== 'tcp') {
    // (Not over TCP: the layer choice does not depend on the transport, and the direct
    // call covers it.)
    // Uncapped (a capped page may send one layer only): Bob's two tiles (about 470 px
    // wide) ask for pictures up to 720 px wide, the half layer of Alice's 1280x720
    // camera; a small window makes small tiles and Bob's page asks for the quarter layer
    // (320 px) and gets it; the window's old size brings a larger layer back.
    // The receiving page's decoded width, and a trace of when it or the count of
    // decoded keyframes changed (wall clock, to set beside the SFU's log).
    const trace = [];
    const width = async (page) => {
      const s = await page.evaluate(async () => {
        let v = null;
        (await window.huddleMedia.pc.getStats()).forEach((s) => {
          if (s.type === 'inbound-rtp' && s.kind === 'video') v = s;
        });
        return v && { w: v.frameWidth || 0, kf: v.keyFramesDecoded, fd: v.framesDecoded, kb: Math.round(v.bytesReceived / 1000), ssrc: v.ssrc };
      });
      if (!s) return 0;
      const last = trace[trace.length - 1];
      if (!last || last.w !== s.w || last.kf !== s.kf || last.ssrc !== s.ssrc) {
        trace.push({ at: new Date().toISOString().slice(11, 23), ...s });
      }
      return s.w;
    };
    // Polls (getStats is asynchronous, which waitForFunction would take as true at once).
    const widthIs = async (page, ok, what) => {
      const start = Date.now();
      const end = start + 20000;
      let w = 0;
      while (Date.now() < end) {
        w = await width(page);
        if (ok === 'small' ? w > 0 && w <= 320 : w > 320) return Date.now() - start;
        await new Promise((r) => setTimeout(r, 250));
      }
      const tile = await page.evaluate(() => getComputedStyle(document.querySelector('#grid')).getPropertyValue('--tile-width'));
      const sent = JSON.stringify(await layerWidths(alice));
      // What the receiving page's decoder did, for whoever reads a failure.
      const got = JSON.stringify(await page.evaluate(async () => {
        const out = [];
        (await window.huddleMedia.pc.getStats()).forEach((s) => {
          if (s.type === 'inbound-rtp' && s.kind === 'video') {
            const { framesReceived, framesDecoded, keyFramesDecoded, framesDropped, pliCount, firCount, nackCount, frameWidth } = s;
            out.push({ framesReceived, framesDecoded, keyFramesDecoded, framesDropped, pliCount, firCount, nackCount, frameWidth });
          }
        });
        return out;
      }));
      // What the SFU says it forwards to each page and what each layer carries.
      let sfu = '';
      try {
        const r = await fetch(`${base}/v1/rooms/call/media`, { headers: { authorization: `Bearer ${process.env.HUDDLE_API_SECRET}` } });
        sfu = JSON.stringify((await r.json()).participants?.map((p) => ({ who: p.identity, estimate: p.bandwidth_estimate_bps, published: p.published, subscribed: p.subscribed })));
      } catch (e) {
        sfu = String(e);
      }
      throw new Error(`${what}: frame width ${w}, tile ${tile}, Alice sends ${sent}, received ${got}, changes ${JSON.stringify(trace.slice(-12))}, SFU ${sfu}`);
    };
    await widthIs(bob, 'larger', 'medium tiles');
    report.two.bob.width_before = await width(bob);
    const size = bob.viewportSize();
    await bob.setViewportSize({ width: 420, height: 360 });
    await widthIs(bob, 'small', 'small tiles');
    report.two.bob.width_small = await width(bob);
    await bob.setViewportSize(size);
    report.two.bob.larger_again_ms = await widthIs(bob, 'larger', 'medium tiles again');
    report.two.bob.width_after = await width(bob);
    // By now Chromium's own estimate has let it send more than its first, lowest layer.
    report.two.alice.layers_sent = await layersSent(alice);
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
  if (mode === 'tcp') {
    // The SFU's open ICE-TCP connections now that Carol has left.
    const text = await (await fetch(`${base}/metrics`)).text();
    const line = text.split('\n').find((l) => l.startsWith('huddle_sfu_tcp_connections '));
    report.tcp_open = line ? Number(line.split(' ')[1]) : null;
  }
  report.ok = true;
} catch (e) {
  report.error = String(e);
} finally {
  await browser.close();
  console.log(JSON.stringify(report));
  process.exit(report.ok ? 0 : 1);
}
