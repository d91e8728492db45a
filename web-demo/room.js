// One joined room: the participant list, the video grid (media.js, tiles.js), chat
// (chat.js), statistics (stats.js) and the call controls (mute, camera, screen share,
// stats panel). Mute and screen-share state is shared with the others as participant
// metadata ({muted: {audio, video}, screen}) through join and update_participant, so
// their tiles show it. Protocol: docs/protocol.md, "Rooms and presence".

import { RoomChat } from './chat.js';
import { RoomMedia } from './media.js';
import { CallStats } from './stats.js';
import { Tiles } from './tiles.js';

const $ = (id) => document.getElementById(id);

export class Room {
  constructor({ signal, room, name, local, relay, muted, notify, showError, onRemoved }) {
    this.signal = signal;
    this.room = room;
    this.name = name;
    this.notify = notify;
    // Kinds of ours the SFU refused (media_track_refused) and has not admitted since.
    this.refused = new Set();
    this.showError = showError;
    this.onRemoved = onRemoved; // (text) => void: the server took us out
    this.participants = new Map(); // sid -> participant
    this.names = new Map(); // identity -> display name, kept after they leave
    this.mySid = null;
    // Our tracks a moderator muted (the server forwards nothing of them meanwhile).
    this.moderated = { audio: false, video: false };
    this.abort = new AbortController();
    this.tiles = new Tiles($('grid'));
    this.media = new RoomMedia({
      request: (m) => signal.request(m),
      send: (m) => signal.send(m),
      tiles: this.tiles,
      nameOfSid: (sid) => this.participants.get(sid)?.name || 'guest',
      relay,
      onScreenEnded: () => this.screenChanged(),
      onTile: (sid) => this.decorate(sid),
    });
    this.media.local = local;
    this.media.muted = { ...muted };
    this.stats = new CallStats({
      media: this.media,
      tiles: this.tiles,
      table: $('stats-body'),
      nameOfSid: (sid) => this.participants.get(sid)?.name || 'guest',
    });
    this.chat = new RoomChat({
      room,
      send: (m) => signal.send(m),
      nameOf: (identity) => this.names.get(identity) || identity,
      els: {
        log: $('chat-log'),
        form: $('chat-form'),
        input: $('chat-input'),
        typing: $('chat-typing'),
        unread: $('chat-unread'),
        toggle: $('chat-toggle'),
        body: $('chat-body'),
      },
    });
    window.huddleMedia = this.media; // for the browser tests and the console
    window.huddleStats = this.stats;
    this.bindControls();
  }

  bindControls() {
    const opts = { signal: this.abort.signal };
    $('mic').addEventListener('click', () => this.toggle('audio'), opts);
    $('cam').addEventListener('click', () => this.toggle('video'), opts);
    $('screen').addEventListener('click', () => this.toggleScreen(), opts);
    $('stats-toggle').addEventListener('click', () => {
      const open = $('stats-panel').hidden;
      $('stats-panel').hidden = !open;
      $('stats-toggle').setAttribute('aria-pressed', String(open));
    }, opts);
    // Shortcuts when not typing: m for the microphone, v for the camera.
    document.addEventListener('keydown', (ev) => {
      if (ev.target.closest('input, textarea, select') || ev.ctrlKey || ev.metaKey || ev.altKey) return;
      if (ev.key === 'm') this.toggle('audio');
      if (ev.key === 'v') this.toggle('video');
    }, opts);
    this.showControls();
  }

  metadata() {
    return { muted: { ...this.media.muted }, screen: !!this.media.screen };
  }

  publishState() {
    this.showControls();
    this.signal.request({ type: 'update_participant', metadata: this.metadata() }).catch(() => {});
  }

  toggle(kind) {
    if (this.media.muted[kind] && this.moderated[kind]) {
      this.notify(`A moderator muted your ${kind === 'audio' ? 'microphone' : 'camera'}: the others would not ${kind === 'audio' ? 'hear' : 'see'} you.`);
      return;
    }
    this.media.setMuted(kind, !this.media.muted[kind]);
    this.publishState();
  }

  // A moderator muted or unmuted one of our tracks: turn it off here too and say so;
  // turning it on again is left to the user.
  moderatedTrack(kind, muted) {
    if (kind !== 'audio' && kind !== 'video') return;
    this.moderated[kind] = muted;
    const what = kind === 'audio' ? 'microphone' : 'camera';
    if (muted) {
      this.media.setMuted(kind, true);
      this.publishState();
      this.notify(`A moderator muted your ${what}.`);
    } else {
      this.notify(`A moderator allowed your ${what} again.`);
    }
  }

  async toggleScreen() {
    try {
      if (this.media.screen) await this.media.stopScreen();
      else await this.media.startScreen();
    } catch (e) {
      if (e.name !== 'NotAllowedError' && e.name !== 'AbortError') this.showError(`Screen share: ${e.message || e}`);
    }
    this.publishState();
  }

  screenChanged() {
    this.publishState();
  }

  showControls() {
    const set = (id, pressed, label, title) => {
      const b = $(id);
      b.setAttribute('aria-pressed', String(pressed));
      b.querySelector('.label').textContent = label;
      b.title = title;
    };
    const m = this.media.muted;
    set('mic', m.audio, m.audio ? 'Unmute' : 'Mute', m.audio ? 'Unmute microphone (m)' : 'Mute microphone (m)');
    set('cam', m.video, m.video ? 'Start video' : 'Stop video', m.video ? 'Turn camera on (v)' : 'Turn camera off (v)');
    set('screen', !!this.media.screen, this.media.screen ? 'Stop sharing' : 'Share screen', 'Share your screen instead of your camera');
    $('mic').disabled = !this.media.local?.getAudioTracks().length;
    $('cam').disabled = !this.media.local?.getVideoTracks().length;
    $('screen').disabled = !this.media.local?.getVideoTracks().length || !navigator.mediaDevices?.getDisplayMedia;
  }

  // The server said welcome (first connection or a reconnection).
  async connected(welcome) {
    this.chat.connected(welcome.identity);
    this.names.set(welcome.identity, welcome.name);
    if (welcome.resumed) return; // still in the room, media untouched
    const again = this.mySid !== null;
    const joined = await this.signal.request({ type: 'join', room: this.room, metadata: this.metadata() });
    this.onJoined(joined);
    if (again) this.notify('Rejoined the room.');
  }

  disconnected() {
    this.chat.disconnected();
  }

  onJoined(m) {
    this.participants.clear();
    this.mySid = m.participant.sid;
    this.iceServers = m.ice_servers;
    for (const p of m.participants) this.remember(p);
    this.render();
    this.media.start(this.media.local, m.ice_servers, this.mySid, this.name).catch((e) => {
      this.showError(`Media: ${e.message || e.code || e}`);
    });
  }

  remember(p) {
    this.participants.set(p.sid, p);
    this.names.set(p.identity, p.name);
    this.decorate(p.sid);
  }

  // Name, muted marks and screen share of a remote tile, from the participant's metadata.
  decorate(sid) {
    const p = this.participants.get(sid);
    if (!p || sid === this.mySid) return;
    this.tiles.rename(sid, p.name);
    this.tiles.setMuted(sid, p.metadata?.muted || {});
    this.tiles.setScreen(sid, !!p.metadata?.screen);
  }

  render() {
    const list = [...this.participants.values()].sort((a, b) => a.name.localeCompare(b.name));
    $('participants').replaceChildren(...list.map((p) => {
      const li = document.createElement('li');
      const muted = p.sid === this.mySid ? this.media.muted : p.metadata?.muted || {};
      li.dataset.sid = p.sid;
      li.textContent = p.name + (p.sid === this.mySid ? ' (you)' : '');
      if (muted.audio) {
        const s = document.createElement('span');
        s.className = 'muted-mark';
        s.textContent = 'muted';
        li.append(' ', s);
      }
      return li;
    }));
    $('people-count').textContent = String(list.length);
  }

  // A push; returns true when it was for the room.
  handle(m) {
    if (this.chat.handle(m)) return true;
    switch (m.type) {
      case 'media_offer':
        this.media.onOffer(m);
        return true;
      case 'active_speaker':
        this.media.speaker(m.sid);
        return true;
      case 'connection_quality':
        // The server's score of each member's own link (ours on the local tile).
        for (const p of m.participants || []) {
          this.tiles.setQuality(p.sid === this.mySid ? 'local' : p.sid, p.quality, p.score ?? null);
        }
        return true;
      case 'media_track_paused':
        this.media.trackPaused(m.track, m.paused, m.reason || 'bandwidth');
        return true;
      case 'track_muted':
        if (m.sid === this.mySid) this.moderatedTrack(m.kind, m.muted);
        return true;
      case 'media_track_refused': {
        // The room's publisher limit (or our track limit): we only receive until the
        // SFU admits the track (a publisher left), which track_published then says.
        const what = m.kind === 'video' ? 'camera' : 'microphone';
        this.refused.add(m.kind);
        this.notify(m.code === 'too_many_publishers'
          ? `Your ${what} is not shared: this room has as many people sharing as it allows.`
          : `Your ${what} is not shared: ${m.message}`);
        return true;
      }
      case 'track_published':
        if (m.sid === this.mySid && this.refused.delete(m.kind)) {
          this.notify(`Your ${m.kind === 'video' ? 'camera' : 'microphone'} is shared now.`);
        }
        return true;
      case 'participant_joined':
      case 'participant_updated':
        this.remember(m.participant);
        this.render();
        return true;
      case 'participant_left':
        this.participants.delete(m.sid);
        this.tiles.forget(m.sid);
        this.media.participantLeft(m.sid);
        this.render();
        return true;
      case 'media_left':
        // ICE consent lost or the SFU gave up: start the media session again.
        if (m.reason !== 'shutdown' && this.mySid) {
          this.notify('Media connection lost, reconnecting…');
          this.media.start(this.media.local, this.iceServers, this.mySid, this.name).catch(() => {});
        }
        return true;
      case 'removed':
        this.onRemoved(m.reason === 'duplicate_identity'
          ? 'You joined this room from another tab or device, so this one left.'
          : `You were removed from the room (${m.reason}).`);
        return true;
    }
    return false;
  }

  // Leaves: tells the server (unless the whole session is ending) and frees everything.
  leave({ tellServer }) {
    if (tellServer) this.signal.request({ type: 'leave' }).catch(() => {});
    this.abort.abort();
    this.stats.stop();
    this.chat.close();
    this.media.leave();
    this.tiles.close();
    $('stats-body').replaceChildren();
    $('participants').replaceChildren();
  }
}
