// Audio and video through huddle's SFU: one RTCPeerConnection per page. The page offers
// its camera and microphone (media_offer → media_answer); the SFU then offers the others'
// tracks (media_offer push → media_answer). A received stream's id is the publisher's sid
// (a=msid), which names its tile. Muting sets track.enabled (the sender keeps its slot and
// sends silence or black); screen share swaps the camera track for the screen's with
// RTCRtpSender.replaceTrack, so no renegotiation is needed. Protocol: docs/protocol.md,
// "Media".

// Simulcast layers, low to high (the SFU ranks q/h/f).
const SIMULCAST = [
  { rid: 'q', scaleResolutionDownBy: 4, maxBitrate: 150_000 },
  { rid: 'h', scaleResolutionDownBy: 2, maxBitrate: 500_000 },
  { rid: 'f', maxBitrate: 1_500_000 },
];

export class RoomMedia {
  constructor({ request, send, tiles, nameOfSid, relay, onScreenEnded, onTile }) {
    this.request = request; // (msg) => Promise<response>
    this.send = send; // (msg) => id, no answer awaited
    this.tiles = tiles;
    this.nameOfSid = nameOfSid;
    this.relay = relay;
    this.onScreenEnded = onScreenEnded; // the user stopped sharing from the browser's UI
    this.onTile = onTile; // (sid) => void: a remote tile appeared, to name and mark it
    this.pc = null;
    this.local = null; // camera + microphone stream
    this.screen = null; // screen capture stream while sharing
    this.muted = { audio: false, video: false };
    this.streams = new Map(); // sid -> remote MediaStream
    this.trackOwner = new Map(); // remote track id (a=msid) -> publisher sid
    this.pausedBy = new Map(); // remote track id -> reasons the SFU paused it for
    this.videoTracks = new Set(); // ids of the remote video tracks received
    this.maxWidth = 0; // the largest picture asked for, from the tile size (0: no limit yet)
    tiles.onWidth = (width) => this.fitSize(width);
    this.pinned = new Set(); // sids whose video is always received under "last N"
    tiles.onPin = (sid) => this.togglePin(sid);
    this.queue = Promise.resolve(); // negotiation steps run one at a time
  }

  // Joins the room's media session and publishes `local` (may be null: receive only).
  // Called again after a rejoin; the local stream and mute state carry over.
  async start(local, iceServers, mySid, myName) {
    this.local = local;
    this.mySid = mySid;
    this.stop();
    this.pinned.clear(); // a new media session starts with none
    const pc = new RTCPeerConnection({
      iceServers,
      iceTransportPolicy: this.relay ? 'relay' : 'all',
      bundlePolicy: 'max-bundle',
    });
    this.pc = pc;
    pc.ontrack = (ev) => this.addTrack(ev.streams[0], ev.track);
    pc.onconnectionstatechange = () => {
      this.tiles.grid.dataset.connection = pc.connectionState;
    };
    const t = this.tiles.ensure('local', myName, { local: true });
    if (local) {
      for (const track of local.getTracks()) {
        track.enabled = !this.muted[track.kind];
        const sendTrack = track.kind === 'video' && this.screen ? this.screen.getVideoTracks()[0] : track;
        const init = { direction: 'sendonly', streams: [local] };
        // Camera video goes out in three simulcast layers (quarter, half and full size);
        // the SFU sends each receiver the one its bandwidth and its request allow. The
        // browser drops layers the capture is too small for.
        if (track.kind === 'video') init.sendEncodings = SIMULCAST;
        pc.addTransceiver(sendTrack, init);
      }
      t.video.srcObject = this.screen || local;
      if (this.screen) this.screenSender = pc.getSenders().find((s) => s.track?.kind === 'video');
    }
    this.tiles.setMuted('local', this.localMuted());
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
    // The SFU names tracks in a=msid; its pause notices and media_subscribe use the id.
    this.trackOwner.set(track.id, sid);
    if (track.kind === 'video') {
      this.videoTracks.add(track.id);
      if (this.maxWidth) this.send({ type: 'media_subscribe', track: track.id, max_width: this.maxWidth });
    }
    this.streams.set(sid, stream);
    const fresh = !this.tiles.get(sid);
    const t = this.tiles.ensure(sid, this.nameOfSid(sid));
    if (fresh) this.onTile?.(sid);
    track.onended = () => this.prune(sid);
    stream.onremovetrack = () => this.prune(sid);
    if (t.video.srcObject !== stream) t.video.srcObject = stream;
  }

  // Asks the SFU for simulcast layers no larger than the tiles need, by size rather than
  // by quality name, so that it holds for any camera: the SFU forwards the best layer
  // whose picture is at most `max_width` wide (the smallest if none is). The limit is
  // 1.5 times the tile's width in device pixels, rounded up to 40: shrinking a somewhat
  // larger picture looks better than enlarging a smaller one (a 470 px tile gets the
  // 640 px layer of a 1280x720 camera, a 200 px thumbnail the 320 px one). Tiles crop
  // to fill (object-fit: cover), so the width is what must be covered.
  fitSize(tileWidth) {
    const device = tileWidth * (window.devicePixelRatio || 1) * 1.5;
    const maxWidth = Math.min(16384, Math.max(40, Math.ceil(device / 40) * 40));
    if (maxWidth === this.maxWidth) return;
    this.maxWidth = maxWidth;
    for (const track of this.videoTracks) {
      this.send({ type: 'media_subscribe', track, max_width: maxWidth });
    }
  }

  // Pins or unpins a participant's video (media_pin; at most 4, the SFU's limit: the
  // earliest pin goes when a fifth is added). Only matters with the server's last_n.
  togglePin(sid) {
    if (this.pinned.has(sid)) this.pinned.delete(sid);
    else {
      if (this.pinned.size >= 4) {
        const first = this.pinned.values().next().value;
        this.pinned.delete(first);
        this.tiles.setPinned(first, false);
      }
      this.pinned.add(sid);
    }
    this.tiles.setPinned(sid, this.pinned.has(sid));
    this.send({ type: 'media_pin', participants: [...this.pinned] });
  }

  // media_track_paused: a video we receive is paused (for bandwidth, or because its
  // publisher is not among the last speakers), or back. A tile is paused while any
  // reason holds.
  trackPaused(track, paused, reason) {
    const reasons = this.pausedBy.get(track) || new Set();
    if (paused) reasons.add(reason); else reasons.delete(reason);
    if (reasons.size) this.pausedBy.set(track, reasons); else this.pausedBy.delete(track);
    const sid = this.trackOwner.get(track);
    if (sid) this.tiles.setPaused(sid, [...reasons][0] || null);
  }

  prune(sid) {
    const s = this.streams.get(sid);
    if (s && s.getTracks().every((tr) => tr.readyState === 'ended')) this.participantLeft(sid);
  }

  // The participant left (or unpublished everything): its tile goes.
  participantLeft(sid) {
    this.streams.delete(sid);
    this.pinned.delete(sid); // the SFU drops it from the list too
    this.tiles.remove(sid);
    for (const [track, owner] of this.trackOwner) {
      if (owner === sid) {
        this.trackOwner.delete(track);
        this.videoTracks.delete(track);
        this.pausedBy.delete(track);
      }
    }
  }

  localMuted() {
    return {
      audio: this.muted.audio || !this.local?.getAudioTracks().length,
      video: (this.muted.video || !this.local?.getVideoTracks().length) && !this.screen,
    };
  }

  // Mutes or unmutes the microphone or camera; returns the new state.
  setMuted(kind, muted) {
    this.muted[kind] = muted;
    for (const t of this.local?.getTracks() || []) if (t.kind === kind) t.enabled = !muted;
    this.tiles.setMuted('local', this.localMuted());
    return this.localMuted();
  }

  videoSender() {
    return this.pc?.getSenders().find((s) => s.track?.kind === 'video' || s === this.screenSender);
  }

  // Shares the screen in place of the camera; resolves false if the user cancelled.
  async startScreen() {
    const screen = await navigator.mediaDevices.getDisplayMedia({ video: { frameRate: 15 }, audio: false });
    const track = screen.getVideoTracks()[0];
    track.contentHint = 'detail';
    const sender = this.videoSender();
    if (!sender) {
      screen.getTracks().forEach((t) => t.stop());
      throw new Error('screen sharing needs a camera slot (join with a camera)');
    }
    await sender.replaceTrack(track);
    this.screenSender = sender;
    this.screen = screen;
    track.onended = () => {
      this.stopScreen();
      this.onScreenEnded?.();
    };
    const t = this.tiles.get('local');
    t.video.srcObject = screen;
    this.tiles.setScreen('local', true);
    this.tiles.setMuted('local', this.localMuted());
    return true;
  }

  async stopScreen() {
    if (!this.screen) return;
    const cam = this.local?.getVideoTracks()[0] || null;
    await this.screenSender?.replaceTrack(cam).catch(() => {});
    this.screen.getTracks().forEach((t) => t.stop());
    this.screen = null;
    const t = this.tiles.get('local');
    if (t) t.video.srcObject = this.local;
    this.tiles.setScreen('local', false);
    this.tiles.setMuted('local', this.localMuted());
  }

  speaker(sid) {
    this.tiles.speaker(sid && sid === this.mySid ? 'local' : sid);
  }

  stop() {
    this.pc?.close();
    this.pc = null;
    this.streams.clear();
    this.trackOwner.clear();
    this.videoTracks.clear();
    this.pausedBy.clear();
    this.tiles.clear({ keepLocal: true });
  }

  leave() {
    this.stop();
    this.tiles.clear();
    this.screen?.getTracks().forEach((t) => t.stop());
    this.screen = null;
    this.local?.getTracks().forEach((t) => t.stop());
    this.local = null;
  }
}
