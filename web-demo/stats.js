// Call statistics from RTCPeerConnection.getStats, sampled every second: per remote
// participant the RTT (to the SFU, one transport carries everything), packet loss and
// jitter over the last second, receive bitrate, resolution, frames decoded and concealed
// audio; for this page what it sends. They fill the stats panel, beside the server's
// level of each participant's own connection (the tiles' indicator, `connection_quality`).

const PERIOD_MS = 1000;

// Quality from what the last second looked like (thresholds of common conferencing
// practice: ~2 % loss or 200 ms RTT is noticeable, ~10 % or 400 ms hurts).
export function qualityOf({ rtt, loss, jitter }) {
  if (rtt === null && loss === null) return 'unknown';
  if (loss > 0.1 || rtt > 0.4) return 'poor';
  if (loss > 0.02 || rtt > 0.2 || jitter > 0.05) return 'fair';
  return 'good';
}

const fmt = {
  ms: (s) => (s === null || s === undefined ? '–' : `${Math.round(s * 1000)} ms`),
  pct: (f) => (f === null || f === undefined ? '–' : `${(f * 100).toFixed(1)} %`),
  kbps: (b) => (b === null || b === undefined ? '–' : `${Math.round(b / 1000)} kbit/s`),
  n: (v) => (v === null || v === undefined ? '–' : String(v)),
  res: (w, h) => (w ? `${w}×${h}` : '–'),
};

export class CallStats {
  constructor({ media, tiles, table, nameOfSid }) {
    this.media = media;
    this.tiles = tiles;
    this.table = table; // <tbody> of the stats panel
    this.nameOfSid = nameOfSid;
    this.prev = new Map(); // key -> previous raw counters
    this.latest = new Map(); // sid -> figures shown (read by the tests)
    this.timer = setInterval(() => this.sample().catch((e) => console.debug('stats', e)), PERIOD_MS);
  }

  stop() {
    clearInterval(this.timer);
  }

  // Rate and loss over the last period from cumulative counters.
  delta(key, now, bytes, received, lost) {
    const p = this.prev.get(key);
    this.prev.set(key, { now, bytes, received, lost });
    if (!p || now <= p.now) return { bitrate: null, loss: null };
    const got = received - p.received;
    const missed = Math.max(0, lost - p.lost);
    return {
      bitrate: ((bytes - p.bytes) * 8 * 1000) / (now - p.now),
      loss: got + missed > 0 ? missed / (got + missed) : 0,
    };
  }

  async sample() {
    const pc = this.media.pc;
    if (!pc) return;
    const all = await pc.getStats();
    let rtt = null;
    all.forEach((s) => {
      if (s.type === 'candidate-pair' && s.nominated && s.currentRoundTripTime !== undefined) rtt = s.currentRoundTripTime;
    });
    const rows = [];
    const now = performance.now();
    const seen = new Set();
    for (const [sid, stream] of this.media.streams) {
      const f = { sid, rtt, loss: null, jitter: null, bitrate: 0, width: 0, height: 0, fps: null,
        framesDecoded: 0, audioPackets: 0, concealed: null };
      let lossSum = 0;
      let lossN = 0;
      for (const track of stream.getTracks()) {
        const receiver = pc.getReceivers().find((r) => r.track === track);
        if (!receiver) continue;
        (await receiver.getStats()).forEach((s) => {
          if (s.type !== 'inbound-rtp') return;
          const d = this.delta(`${sid}/${s.kind}`, now, s.bytesReceived || 0, s.packetsReceived || 0, s.packetsLost || 0);
          if (d.bitrate !== null) f.bitrate += d.bitrate;
          if (d.loss !== null) {
            lossSum += d.loss;
            lossN++;
          }
          f.jitter = Math.max(f.jitter ?? 0, s.jitter ?? 0);
          if (s.kind === 'video') {
            f.width = s.frameWidth || 0;
            f.height = s.frameHeight || 0;
            f.fps = s.framesPerSecond ?? null;
            f.framesDecoded = s.framesDecoded || 0;
          } else {
            f.audioPackets = s.packetsReceived || 0;
            f.concealed = s.totalSamplesReceived ? (s.concealedSamples || 0) / s.totalSamplesReceived : null;
          }
        });
      }
      f.loss = lossN ? lossSum / lossN : null;
      f.quality = qualityOf(f);
      seen.add(sid);
      this.latest.set(sid, f);
      rows.push(this.row(this.nameOfSid(sid), f));
    }
    for (const sid of [...this.latest.keys()]) if (sid !== 'local' && !seen.has(sid)) this.latest.delete(sid);
    const mine = this.outbound(all, rtt, now);
    this.latest.set('local', mine);
    rows.unshift(this.row('You (sending)', mine));
    this.table.replaceChildren(...rows);
  }

  // What this page sends, with the loss and jitter the SFU reports back (RTCP RR).
  outbound(all, rtt, now) {
    const f = { sid: 'local', rtt, loss: null, jitter: null, bitrate: 0, width: 0, height: 0, fps: null,
      framesDecoded: null, audioPackets: 0, concealed: null };
    all.forEach((s) => {
      if (s.type === 'outbound-rtp') {
        const d = this.delta(`out/${s.kind}`, now, s.bytesSent || 0, 0, 0);
        if (d.bitrate !== null) f.bitrate += d.bitrate;
        if (s.kind === 'video') {
          f.width = s.frameWidth || 0;
          f.height = s.frameHeight || 0;
          f.fps = s.framesPerSecond ?? null;
        } else {
          f.audioPackets = s.packetsSent || 0;
        }
      } else if (s.type === 'remote-inbound-rtp') {
        if (s.fractionLost !== undefined) f.loss = Math.max(f.loss ?? 0, s.fractionLost);
        // Audio's only: the SFU's reports on video count RTX resends, Chrome's probes
        // among them, and read seconds of jitter on the layer that carries the probes.
        if (s.jitter !== undefined && s.kind === 'audio') f.jitter = Math.max(f.jitter ?? 0, s.jitter);
      }
    });
    f.quality = qualityOf(f);
    return f;
  }

  // The server's level of a participant's own connection, with its estimated MOS.
  connection(sid) {
    const l = this.tiles.link(sid);
    return l ? `${l.quality}${l.score === null ? '' : ` (${l.score.toFixed(1)})`}` : 'measuring';
  }

  row(name, f) {
    const tr = document.createElement('tr');
    tr.dataset.sid = f.sid;
    const cells = [
      ['name', name],
      ['quality', f.quality === 'unknown' ? 'measuring' : f.quality],
      ['connection', this.connection(f.sid)],
      ['rtt', fmt.ms(f.rtt)],
      ['loss', fmt.pct(f.loss)],
      ['jitter', fmt.ms(f.jitter)],
      ['bitrate', fmt.kbps(f.bitrate)],
      ['resolution', fmt.res(f.width, f.height) + (f.fps ? ` @${Math.round(f.fps)}` : '')],
      ['frames', fmt.n(f.framesDecoded)],
      ['audio-packets', fmt.n(f.audioPackets)],
      ['concealed', fmt.pct(f.concealed)],
    ];
    tr.append(...cells.map(([k, v], i) => {
      const td = document.createElement(i === 0 ? 'th' : 'td');
      if (i === 0) td.scope = 'row';
      td.dataset.k = k;
      td.textContent = v;
      return td;
    }));
    return tr;
  }
}
