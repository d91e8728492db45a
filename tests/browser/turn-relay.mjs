// Two RTCPeerConnections in headless Chromium connect through huddle's TURN server with
// iceTransportPolicy "relay", exchange data-channel messages, and report the candidate
// types of the selected pair. Usage: node turn-relay.mjs <turn-url> <username> <password>
// Prints one JSON line; exits non-zero on failure.
import { chromium } from 'playwright-core';

const [url, username, credential] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
try {
  const page = await browser.newPage();
  const result = await page.evaluate(async ({ url, username, credential }) => {
    const config = { iceServers: [{ urls: [url], username, credential }], iceTransportPolicy: 'relay' };
    const a = new RTCPeerConnection(config);
    const b = new RTCPeerConnection(config);
    const types = { a: [], b: [] };
    a.onicecandidate = (e) => { if (e.candidate) { types.a.push(e.candidate.type); b.addIceCandidate(e.candidate); } };
    b.onicecandidate = (e) => { if (e.candidate) { types.b.push(e.candidate.type); a.addIceCandidate(e.candidate); } };
    const channel = a.createDataChannel('probe');
    const echoed = new Promise((resolve, reject) => {
      b.ondatachannel = (e) => { e.channel.onmessage = (m) => e.channel.send('echo:' + m.data); };
      channel.onopen = () => channel.send('hello through the relay');
      channel.onmessage = (m) => resolve(m.data);
      setTimeout(() => reject(new Error('no echo within 15 s; ICE state ' + a.iceConnectionState)), 15000);
    });
    await a.setLocalDescription(await a.createOffer());
    await b.setRemoteDescription(a.localDescription);
    await b.setLocalDescription(await b.createAnswer());
    await a.setRemoteDescription(b.localDescription);
    const reply = await echoed;
    const stats = await a.getStats();
    let pair = null;
    stats.forEach((s) => { if (s.type === 'transport' && s.selectedCandidatePairId) pair = stats.get(s.selectedCandidatePairId); });
    const local = pair && stats.get(pair.localCandidateId);
    const remote = pair && stats.get(pair.remoteCandidateId);
    return {
      reply,
      gathered: types,
      local: local && local.candidateType,
      remote: remote && remote.candidateType,
      bytesSent: pair && pair.bytesSent,
    };
  }, { url, username, credential });
  console.log(JSON.stringify(result));
  const ok = result.reply === 'echo:hello through the relay' && result.local === 'relay' && result.remote === 'relay';
  process.exitCode = ok ? 0 : 1;
} catch (e) {
  console.log(JSON.stringify({ error: String(e) }));
  process.exitCode = 1;
} finally {
  await browser.close();
}
