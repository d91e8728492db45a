// Room chat for the demo: history on join, live messages in order, per-message delivery
// state (sending / sent / failed with retry), resends with the same client_msg_id after a
// reconnect (the server acks a resend again without storing it twice), unread badge and
// typing indicator. Protocol: docs/protocol.md, "Chat".

// One tab is one device; it keeps its id across reloads.
const DEVICE_KEY = 'huddle.device';
const HISTORY_PAGE = 50;

function deviceId() {
  let d = sessionStorage.getItem(DEVICE_KEY);
  if (!d) {
    d = 'web-' + crypto.randomUUID();
    sessionStorage.setItem(DEVICE_KEY, d);
  }
  return d;
}

export class RoomChat {
  constructor({ room, send, els, nameOf }) {
    this.conversation = 'room:' + room;
    this.send = send; // (msg) => request id
    this.els = els;
    this.nameOf = nameOf;
    this.identity = null;
    this.lastSeq = 0; // highest seq shown
    this.loaded = false; // history fetched once
    this.synced = false;
    this.entries = new Map(); // seq -> element
    this.pending = new Map(); // client_msg_id -> {text, el, state}
    this.requests = new Map(); // request id -> client_msg_id
    this.unread = 0;
    this.ackTimer = null;
    this.typingUntil = new Map();
    this.lastTypingSent = 0;
    // The elements outlive this chat (a page may join several rooms in turn).
    this.abort = new AbortController();
    const opts = { signal: this.abort.signal };
    els.form.addEventListener('submit', (ev) => {
      ev.preventDefault();
      const text = els.input.value.trim();
      if (!text) return;
      els.input.value = '';
      this.post(text);
    }, opts);
    els.input.addEventListener('input', () => this.typing(), opts);
    els.toggle.addEventListener('click', () => this.setOpen(els.body.hidden), opts);
  }

  close() {
    this.abort.abort();
    clearTimeout(this.ackTimer);
    this.els.log.replaceChildren();
    this.els.typing.textContent = '';
    this.setUnread(0);
  }

  setOpen(open) {
    this.els.body.hidden = !open;
    this.els.toggle.setAttribute('aria-expanded', String(open));
    this.els.toggle.textContent = open ? 'Hide' : 'Show';
    if (open) this.setUnread(0);
  }

  setUnread(n) {
    this.unread = n;
    this.els.unread.hidden = n === 0;
    this.els.unread.textContent = String(n);
    this.els.unread.setAttribute('aria-label', `${n} unread`);
  }

  // Called on every (re)connection once the server said welcome.
  connected(identity) {
    this.identity = identity;
    this.synced = false;
    if (!this.loaded) {
      this.send({ type: 'chat_history', conversation: this.conversation, limit: HISTORY_PAGE });
    } else {
      this.sync();
    }
  }

  disconnected() {
    this.synced = false;
  }

  sync() {
    this.send({
      type: 'chat_sync',
      device: deviceId(),
      cursors: { [this.conversation]: this.lastSeq },
    });
  }

  handle(m) {
    switch (m.type) {
      case 'chat_history':
        if (m.conversation !== this.conversation) return false;
        for (const e of m.messages) this.show(e, false);
        this.loaded = true;
        this.sync();
        return true;
      case 'chat_synced':
        this.synced = true;
        // Everything not acked yet goes again, with its original client_msg_id.
        for (const [id, p] of this.pending) if (p.state !== 'sent') this.transmit(id);
        return true;
      case 'chat_message':
        if (m.conversation !== this.conversation) return false;
        this.show(m, true);
        this.scheduleAck();
        return true;
      case 'chat_ack': {
        const p = this.pending.get(m.client_msg_id);
        if (p) this.setState(m.client_msg_id, 'sent', m.seq);
        return true;
      }
      case 'chat_typing':
        if (m.conversation === this.conversation) this.showTyping(m.identity, m.typing);
        return true;
      case 'error': {
        const id = this.requests.get(m.id);
        if (id === undefined) return false;
        this.requests.delete(m.id);
        this.setState(id, 'failed');
        this.pending.get(id).error = `${m.code}: ${m.message}`;
        return true;
      }
    }
    return false;
  }

  post(text) {
    const id = crypto.randomUUID();
    const el = this.render({ sender: this.identity, text, client_msg_id: id }, 'sending');
    this.els.log.append(el);
    this.pending.set(id, { text, el, state: 'sending' });
    this.scrollDown();
    if (this.synced) this.transmit(id);
  }

  transmit(id) {
    const p = this.pending.get(id);
    this.setState(id, 'sending');
    const rid = this.send({
      type: 'chat_send',
      conversation: this.conversation,
      client_msg_id: id,
      text: p.text,
    });
    this.requests.set(rid, id);
  }

  setState(id, state, seq) {
    const p = this.pending.get(id);
    if (!p) return;
    p.state = state;
    p.el.dataset.state = state;
    const label = { sending: 'sending…', sent: 'sent', failed: 'failed' }[state];
    const st = p.el.querySelector('.state');
    st.textContent = label;
    p.el.querySelector('.retry').hidden = state !== 'failed';
    if (seq !== undefined) this.place(p.el, seq);
  }

  // Puts an element in seq order (unsent messages stay last) and records it.
  place(el, seq) {
    el.dataset.seq = String(seq);
    this.entries.set(seq, el);
    this.lastSeq = Math.max(this.lastSeq, seq);
    const next = [...this.els.log.children].find(
      (c) => c !== el && (!c.dataset.seq || Number(c.dataset.seq) > seq),
    );
    if (next) this.els.log.insertBefore(el, next);
    else this.els.log.append(el);
  }

  show(e, live) {
    if (e.kind === 'edit' || e.kind === 'delete') {
      const target = this.entries.get(e.target_seq);
      if (target) {
        target.querySelector('.text').textContent = e.kind === 'delete' ? '(deleted)' : e.text;
      }
      this.lastSeq = Math.max(this.lastSeq, e.seq);
      return;
    }
    if (this.entries.has(e.seq)) return; // already shown
    const mine = this.pending.get(e.client_msg_id);
    if (mine && e.sender === this.identity) {
      this.setState(e.client_msg_id, 'sent', e.seq);
      return;
    }
    const el = this.render(e, null);
    this.place(el, e.seq);
    if (live && (this.els.body.hidden || document.hidden)) this.setUnread(this.unread + 1);
    this.showTyping(e.sender, false);
    this.scrollDown();
  }

  render(e, state) {
    const li = document.createElement('li');
    li.className = e.sender === this.identity ? 'mine' : '';
    const who = document.createElement('span');
    who.className = 'who';
    who.textContent = this.nameOf(e.sender);
    const text = document.createElement('span');
    text.className = 'text';
    text.textContent = e.deleted ? '(deleted)' : e.text ?? '';
    const st = document.createElement('span');
    st.className = 'state';
    const retry = document.createElement('button');
    retry.type = 'button';
    retry.className = 'retry';
    retry.textContent = 'Retry';
    retry.hidden = true;
    retry.addEventListener('click', () => this.synced && this.transmit(e.client_msg_id));
    li.append(who, text, st, retry);
    if (state) {
      li.dataset.state = state;
      st.textContent = 'sending…';
    }
    return li;
  }

  scheduleAck() {
    if (this.ackTimer) return;
    this.ackTimer = setTimeout(() => {
      this.ackTimer = null;
      if (this.synced) {
        this.send({ type: 'chat_received', conversation: this.conversation, seq: this.lastSeq });
      }
    }, 500);
  }

  typing() {
    const now = Date.now();
    if (!this.synced || now - this.lastTypingSent < 3000) return;
    this.lastTypingSent = now;
    this.send({ type: 'chat_typing', conversation: this.conversation, typing: true });
  }

  showTyping(identity, on) {
    if (identity === this.identity) return;
    if (on) this.typingUntil.set(identity, Date.now() + 5000);
    else this.typingUntil.delete(identity);
    const names = [...this.typingUntil.keys()].map((i) => this.nameOf(i));
    this.els.typing.textContent = names.length ? `${names.join(', ')} typing…` : '';
    if (on) setTimeout(() => this.showTyping(identity, Date.now() < (this.typingUntil.get(identity) ?? 0)), 5100);
  }

  scrollDown() {
    this.els.log.scrollTop = this.els.log.scrollHeight;
  }
}
