// The video grid: one tile per participant (keyed by sid, "local" for this page) with
// its name, muted-microphone and camera-off marks, a connection-quality indicator (the
// server's score of that participant's own link: `connection_quality`) and the
// active-speaker highlight. The grid picks the column count that makes tiles
// largest in the space it has, for 1 to 16 and more tiles.

function icon(id) {
  const svg = document.createElementNS('http://www.w3.org/2000/svg', 'svg');
  svg.setAttribute('class', 'icon');
  svg.setAttribute('aria-hidden', 'true');
  const use = document.createElementNS('http://www.w3.org/2000/svg', 'use');
  use.setAttribute('href', `#${id}`);
  svg.append(use);
  return svg;
}

const QUALITY_TEXT = { excellent: 'excellent', good: 'good', poor: 'poor', lost: 'lost', unknown: 'measuring' };

export class Tiles {
  constructor(grid) {
    this.grid = grid;
    this.tiles = new Map(); // sid -> tile
    this.links = new Map(); // sid ("local" for this page) -> {quality, score} from the server
    this.observer = new ResizeObserver(() => this.layout());
    this.observer.observe(grid);
  }

  close() {
    this.observer.disconnect();
    this.clear();
  }

  get(sid) {
    return this.tiles.get(sid);
  }

  // The tile of `sid`, created on first use.
  ensure(sid, name, { local = false } = {}) {
    let t = this.tiles.get(sid);
    if (t) return t;
    const el = document.createElement('figure');
    el.className = 'tile';
    el.dataset.sid = sid;
    const video = document.createElement('video');
    video.autoplay = true;
    video.playsInline = true;
    video.muted = local; // never play one's own microphone back
    if (local) video.classList.add('mirror');
    const avatar = document.createElement('div');
    avatar.className = 'avatar';
    avatar.setAttribute('aria-hidden', 'true');
    const caption = document.createElement('figcaption');
    const mic = document.createElement('span');
    mic.className = 'mic-off';
    mic.append(icon('i-mic-off'));
    mic.hidden = true;
    mic.setAttribute('role', 'img');
    mic.setAttribute('aria-label', 'microphone muted');
    const label = document.createElement('span');
    label.className = 'name';
    const quality = document.createElement('span');
    quality.className = 'quality';
    quality.dataset.level = 'unknown';
    quality.setAttribute('role', 'img');
    quality.append(...[1, 2, 3].map(() => document.createElement('i')));
    caption.append(quality, label, mic);
    el.append(video, avatar, caption);
    let pin = null;
    if (!local) {
      // Pin: with the server's "last N", always receive this participant's video.
      pin = document.createElement('button');
      pin.type = 'button';
      pin.className = 'pin';
      pin.textContent = 'Pin';
      pin.title = 'Always show this video';
      pin.setAttribute('aria-pressed', 'false');
      pin.addEventListener('click', () => this.onPin?.(sid));
      el.append(pin);
    }
    this.grid.append(el);
    t = { sid, el, video, avatar, caption, label, mic, quality, local, pin };
    this.tiles.set(sid, t);
    this.rename(sid, name);
    const known = this.links.get(sid);
    this.setQuality(sid, known?.quality || 'unknown', known?.score ?? null);
    this.layout();
    return t;
  }

  rename(sid, name) {
    const t = this.tiles.get(sid);
    if (!t) return;
    const shown = t.local ? `${name} (you)` : name;
    t.label.textContent = shown;
    t.avatar.textContent = (name.trim()[0] || '?').toUpperCase();
    t.el.setAttribute('aria-label', shown);
  }

  setMuted(sid, { audio = false, video = false } = {}) {
    const t = this.tiles.get(sid);
    if (!t) return;
    t.mic.hidden = !audio;
    t.el.classList.toggle('muted-audio', !!audio);
    t.el.classList.toggle('video-off', !!video);
  }

  // The SFU paused this participant's video for us (too little bandwidth for its lowest
  // layer): show the avatar and say so, rather than a frozen picture.
  // Shows the avatar instead of a frozen picture while the SFU pauses the video;
  // `reason` null: flowing.
  setPaused(sid, reason) {
    const t = this.tiles.get(sid);
    if (!t) return;
    t.el.classList.toggle('paused', !!reason);
    t.el.title = !reason ? ''
      : reason === 'last_n' ? 'Video paused: not among the latest speakers'
        : 'Video paused: not enough bandwidth';
  }

  // This participant's video is pinned into view (see RoomMedia.togglePin).
  setPinned(sid, on) {
    const t = this.tiles.get(sid);
    if (!t?.pin) return;
    t.el.classList.toggle('pinned', on);
    t.pin.setAttribute('aria-pressed', String(on));
    t.pin.textContent = on ? 'Unpin' : 'Pin';
  }

  setScreen(sid, on) {
    const t = this.tiles.get(sid);
    if (!t) return;
    t.el.classList.toggle('screen', on);
    if (t.local) t.video.classList.toggle('mirror', !on);
  }

  // The server's level of this participant's connection (excellent, good, poor, lost;
  // `unknown` until the first) and its estimated MOS.
  setQuality(sid, level, score = null) {
    if (level !== 'unknown') this.links.set(sid, { quality: level, score });
    const t = this.tiles.get(sid);
    if (!t) return;
    const text = QUALITY_TEXT[level] || level;
    t.quality.dataset.level = level;
    t.quality.setAttribute('aria-label', `connection ${text}`);
    t.quality.title = `Connection: ${text}${score === null ? '' : ` (MOS ${score.toFixed(1)})`}`;
  }

  // What the server last said of this participant's connection, if anything.
  link(sid) {
    return this.links.get(sid) || null;
  }

  speaker(sid) {
    for (const [s, t] of this.tiles) t.el.classList.toggle('speaking', s === sid);
  }

  remove(sid) {
    const t = this.tiles.get(sid);
    if (!t) return;
    t.el.remove();
    this.tiles.delete(sid);
    this.layout();
  }

  clear({ keepLocal = false } = {}) {
    for (const sid of [...this.tiles.keys()]) if (!(keepLocal && sid === 'local')) this.remove(sid);
    if (!keepLocal) this.links.clear();
  }

  // A participant left the room: its level no longer applies.
  forget(sid) {
    this.links.delete(sid);
  }

  // Chooses the column count that gives the largest 16:9 tiles in the grid's box; past
  // what fits at a readable size the grid scrolls.
  layout() {
    const n = Math.max(1, this.tiles.size);
    const gap = 8; // also the grid's padding (style.css)
    const w = (this.grid.clientWidth || 800) - 2 * gap;
    const h = (this.grid.clientHeight || 450) - 2 * gap;
    const width = (cols) => {
      const rows = Math.ceil(n / cols);
      return Math.min((w - gap * (cols - 1)) / cols, ((h - gap * (rows - 1)) / rows) * (16 / 9));
    };
    let largest = 0;
    for (let cols = 1; cols <= n; cols++) largest = Math.max(largest, width(cols));
    // Side by side beats stacked when the tiles come out nearly as large.
    let best = 1;
    for (let cols = 1; cols <= n; cols++) if (width(cols) >= largest * 0.8) best = cols;
    let bestWidth = width(best);
    // Tiles narrower than this are unreadable: use fewer columns and let the grid scroll.
    const minWidth = Math.min(w, 180);
    if (bestWidth < minWidth) {
      best = Math.max(1, Math.floor((w + gap) / (minWidth + gap)));
      bestWidth = (w - gap * (best - 1)) / best;
    }
    this.grid.style.setProperty('--cols', String(best));
    this.grid.style.setProperty('--tile-width', `${Math.floor(bestWidth)}px`);
    this.grid.dataset.count = String(this.tiles.size);
    this.onWidth?.(bestWidth);
  }
}
