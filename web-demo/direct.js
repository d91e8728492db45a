// One-to-one calls between two identities (docs/protocol.md, "One-to-one calls"): the
// caller sends call_invite with a fresh room name in its metadata; the callee's devices
// ring (call_ringing), one accepts or rejects; after an accept both join that room and
// the media goes through the SFU like any room (docs/web-demo.md says why). Hanging up
// is call_hangup; the other side leaves the room when it hears call_ended.

const END_TEXT = {
  rejected: 'declined the call',
  busy: 'is busy',
  cancelled: 'cancelled the call',
  timeout: 'did not answer',
  hangup: 'hung up',
  answered_elsewhere: 'The call was answered on another device.',
  rejected_elsewhere: 'The call was declined on another device.',
  peer_disconnected: 'lost the connection',
  server_shutdown: 'The server shut down; the call ended.',
};

function callRoom() {
  const bytes = crypto.getRandomValues(new Uint8Array(8));
  return 'call-' + [...bytes].map((b) => b.toString(16).padStart(2, '0')).join('');
}

export class DirectCalls {
  constructor({ signal, els, busy, enterRoom, leaveRoom, notify, showError }) {
    this.signal = signal;
    this.els = els; // dialog, text, accept, reject, cancel, close
    this.busy = busy; // () => true while in a room
    this.enterRoom = enterRoom; // (room, peerName) => void
    this.leaveRoom = leaveRoom; // () => void
    this.notify = notify;
    this.showError = showError;
    this.call = null; // {id, room, peer, role: 'caller'|'callee', state}
    this.state = 'idle'; // idle | calling | ringing | incoming | in-call (read by the tests)
    els.accept.addEventListener('click', () => this.accept());
    els.reject.addEventListener('click', () => this.reject());
    els.cancel.addEventListener('click', () => this.hangup());
    els.close.addEventListener('click', () => els.dialog.close());
    // Escape on the dialog means "no": decline an incoming call, cancel an outgoing one.
    els.dialog.addEventListener('cancel', (ev) => {
      ev.preventDefault();
      if (this.state === 'incoming') this.reject();
      else if (this.state === 'calling' || this.state === 'ringing') this.hangup();
      else els.dialog.close();
    });
  }

  setState(state) {
    this.state = state;
    document.body.dataset.call = state;
  }

  show(text, buttons) {
    const { dialog } = this.els;
    this.els.text.textContent = text;
    for (const b of ['accept', 'reject', 'cancel', 'close']) this.els[b].hidden = !buttons.includes(b);
    if (!dialog.open) dialog.showModal();
    this.els[buttons[0]]?.focus();
  }

  async place(to) {
    if (this.call) return;
    const room = callRoom();
    this.setState('calling');
    this.call = { id: null, room, peer: to, role: 'caller' };
    this.show(`Calling ${to}…`, ['cancel']);
    try {
      const r = await this.signal.request({ type: 'call_invite', to, metadata: { room } });
      if (this.call) this.call.id = r.call_id;
      if (this.state === 'idle') this.quiet({ type: 'call_hangup', call_id: r.call_id });
    } catch (e) {
      this.call = null;
      this.setState('idle');
      const text = e.code === 'callee_unavailable' ? `${to} is not online.` : `Could not call ${to}: ${e.message || e.code}`;
      this.show(text, ['close']);
    }
  }

  async accept() {
    const c = this.call;
    if (!c || this.state !== 'incoming') return;
    this.setState('in-call');
    this.els.dialog.close();
    try {
      await this.signal.request({ type: 'call_accept', call_id: c.id });
    } catch (e) {
      // Cancelled, timed out or answered elsewhere in the meantime.
      if (this.call === c) {
        this.call = null;
        this.setState('idle');
        this.show(`Could not answer: ${e.message || e.code}`, ['close']);
      }
      return;
    }
    if (this.call === c) this.enterRoom(c.room, c.peer);
  }

  // Requests whose failure only means the call is already gone.
  quiet(msg) {
    this.signal.request(msg).catch(() => {});
  }

  reject() {
    const c = this.call;
    if (!c) return;
    this.quiet({ type: 'call_reject', call_id: c.id, reason: 'declined' });
    this.call = null;
    this.setState('idle');
    this.els.dialog.close();
  }

  // Cancels an unanswered call or hangs up an answered one.
  hangup() {
    const c = this.call;
    this.call = null;
    this.setState('idle');
    this.els.dialog.close();
    if (c?.id) this.quiet({ type: 'call_hangup', call_id: c.id });
  }

  // A push for the call machinery; returns true when it was one.
  handle(m) {
    switch (m.type) {
      case 'call_incoming': {
        const room = m.metadata?.room;
        if (this.call || this.busy() || typeof room !== 'string' || !/^[A-Za-z0-9._~-]{1,128}$/.test(room)) {
          this.quiet({ type: 'call_reject', call_id: m.call_id, reason: 'busy' });
          return true;
        }
        const peer = m.from?.name || m.from?.identity || 'someone';
        this.call = { id: m.call_id, room, peer, role: 'callee' };
        this.setState('incoming');
        this.quiet({ type: 'call_ringing', call_id: m.call_id });
        this.show(`${peer} is calling you`, ['accept', 'reject']);
        return true;
      }
      case 'call_ringing':
        if (this.call?.id === m.call_id || (this.call && !this.call.id)) {
          this.setState('ringing');
          this.els.text.textContent = `Ringing ${this.call.peer}…`;
        }
        return true;
      case 'call_accepted':
        if (this.call && (this.call.id === m.call_id || !this.call.id)) {
          this.setState('in-call');
          this.els.dialog.close();
          this.enterRoom(this.call.room, this.call.peer);
        }
        return true;
      case 'call_ended': {
        const c = this.call;
        if (!c || (c.id && c.id !== m.call_id)) return true;
        const wasInCall = this.state === 'in-call';
        this.call = null;
        this.setState('idle');
        const text = END_TEXT[m.reason] || `The call ended (${m.reason}).`;
        const sentence = /^[A-Z]/.test(text) ? text : `${c.peer} ${text}.`;
        if (wasInCall) {
          this.leaveRoom();
          this.notify(sentence);
        } else {
          this.show(sentence, ['close']);
        }
        return true;
      }
    }
    return false;
  }
}
