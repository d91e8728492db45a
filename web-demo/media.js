// Audio and video through huddle's SFU: one RTCPeerConnection per page. The page offers
// its camera and microphone (media_offer → media_answer); the SFU then offers the others'
// tracks (media_offer push → media_answer). A received stream's id is the publisher's sid
// (a=msid), which names its tile. Protocol: docs/protocol.md, "Media".

export class RoomMedia {
  constructor({ request, send, grid, nameOfSid, relay }) {
    this.request = request; // (msg) => Promise<response>
    this.send = send; // (msg) => id, no answer awaited
    this.grid = grid;
    this.nameOfSid = nameOfSid;
    this.relay = relay;
    this.pc = null;
    this.local = null;
    this.tiles = new Map(); // sid -> {el, video, stream}
    this.queue = Promise.resolve(); // negotiation steps run one at a time
  }

  // Joins the room's media session and publishes `local` (may be null: receive only).
  async start(local, iceServers, mySid) {
    this.local = local;
    this.mySid = mySid;
    this.stop();
    const pc = new RTCPeerConnection({
      iceServers,
      iceTransportPolicy: this.relay ? 'relay' : 'all',
      bundlePolicy: 'max-bundle',
    });
    this.pc = pc;
    pc.ontrack = (ev) => this.addTrack(ev.streams[0], ev.track);
    pc.onconnectionstatechange = () => {
      this.grid.dataset.connection = pc.connectionState;
    };
    if (local) {
      for (const track of local.getTracks()) pc.addTransceiver(track, { direction: 'sendonly', streams: [local] });
      this.tile('local', 'You', local, true);
    }
    await this.request({ type: 'media_join' });
    await this.negotiate(async () => {
      await pc.setLocalDescription(await pc.createOffer());
      const r = await this.request({ type: 'media_offer', sdp: pc.localDescription.sdp });
      await pc.setRemoteDescription({ type: 'answer', sdp: r.sdp });
    });
  }

  negotiate(step) {
    this.queue = this.queue.then(step).catch((e) => console.error('negotiation', e));
    return this.queue;
  }

  // A server-initiated offer: the others' tracks come or go.
  onOffer(m) {
    const pc = this.pc;
    if (!pc) return;
    this.negotiate(async () => {
      await pc.setRemoteDescription({ type: 'offer', sdp: m.sdp });
      await pc.setLocalDescription(await pc.createAnswer());
      this.send({ type: 'media_answer', offer_id: m.offer_id, sdp: pc.localDescription.sdp });
    });
  }

  addTrack(stream, track) {
    if (!stream) return;
    const sid = stream.id;
    const t = this.tiles.get(sid) || this.tile(sid, this.nameOfSid(sid), stream, false);
    track.onended = () => this.prune(sid);
    stream.onremovetrack = () => this.prune(sid);
    t.video.srcObject = stream;
  }

  prune(sid) {
    const t = this.tiles.get(sid);
    if (t && t.stream.getTracks().every((tr) => tr.readyState === 'ended')) this.removeTile(sid);
  }

  // The participant left (or unpublished everything): its tile goes.
  participantLeft(sid) {
    this.removeTile(sid);
  }

  tile(sid, name, stream, muted) {
    const el = document.createElement('figure');
    el.className = 'tile';
    el.dataset.sid = sid;
    const video = document.createElement('video');
    video.autoplay = true;
    video.playsInline = true;
    video.muted = muted;
    video.srcObject = stream;
    const caption = document.createElement('figcaption');
    caption.textContent = name;
    el.append(video, caption);
    this.grid.append(el);
    const t = { el, video, stream, caption };
    this.tiles.set(sid, t);
    this.layout();
    return t;
  }

  rename(sid, name) {
    const t = this.tiles.get(sid);
    if (t) t.caption.textContent = name;
  }

  speaker(sid) {
    for (const [s, t] of this.tiles) t.el.classList.toggle('speaking', s === sid || (s === 'local' && sid === this.mySid));
  }

  removeTile(sid) {
    const t = this.tiles.get(sid);
    if (!t) return;
    t.el.remove();
    this.tiles.delete(sid);
    this.layout();
  }

  layout() {
    const n = Math.max(1, this.tiles.size);
    this.grid.style.setProperty('--cols', String(Math.ceil(Math.sqrt(n))));
  }

  stop() {
    this.pc?.close();
    this.pc = null;
    for (const sid of [...this.tiles.keys()]) if (sid !== 'local') this.removeTile(sid);
  }

  leave() {
    this.stop();
    this.removeTile('local');
    this.local?.getTracks().forEach((t) => t.stop());
    this.local = null;
  }
}
