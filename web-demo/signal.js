// The signalling connection: one WebSocket to /v1/ws, requests matched to their responses
// by id, pushes handed to `onPush`, and reconnection with the resume token after a drop or
// a server restart. It reports what it is doing through `onStatus` so the page can tell
// the user. Protocol: docs/protocol.md, "Connecting", "Session", "Resume".

const RETRY_MS = [500, 1000, 2000, 3000, 5000];

export class Signal {
  constructor({ token, onPush, onWelcome, onStatus, onFatal }) {
    this.token = token;
    this.onPush = onPush; // (msg) => void
    this.onWelcome = onWelcome; // (welcome) => void, on every (re)connection
    this.onStatus = onStatus; // (state, detail) => void
    this.onFatal = onFatal; // (message) => void: give up, the token is refused
    this.ws = null;
    this.resumeToken = null;
    this.nextId = 1;
    this.waiting = new Map(); // request id -> {resolve, reject}
    this.closed = false; // closed on purpose: no reconnect
    this.everOpened = false;
    this.failures = 0; // consecutive connections that never opened
    this.restarting = false; // the server said `shutdown`
    this.timer = null;
  }

  connect() {
    const url = new URL('/v1/ws', location.href);
    url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
    url.searchParams.set('access_token', this.token);
    if (this.resumeToken) url.searchParams.set('resume_token', this.resumeToken);
    const ws = new WebSocket(url);
    this.ws = ws;
    let opened = false;
    if (!this.everOpened) this.onStatus('connecting');
    ws.onopen = () => {
      opened = true;
      this.everOpened = true;
      this.failures = 0;
    };
    ws.onmessage = (ev) => {
      let m;
      try {
        m = JSON.parse(ev.data);
      } catch {
        return;
      }
      const w = m.id !== undefined && this.waiting.get(m.id);
      if (w) {
        this.waiting.delete(m.id);
        if (m.type === 'error') w.reject(m);
        else w.resolve(m);
        return;
      }
      if (m.type === 'welcome') {
        const again = this.resumeToken !== null;
        this.resumeToken = m.resume_token;
        this.restarting = false;
        this.onStatus('connected', { resumed: m.resumed, again });
        this.onWelcome(m);
        return;
      }
      if (m.type === 'shutdown') {
        this.restarting = true;
        this.onStatus('restarting');
      }
      this.onPush(m);
    };
    ws.onclose = (ev) => {
      if (this.ws !== ws) return;
      for (const [, w] of this.waiting) w.reject({ code: 'disconnected', message: 'connection lost' });
      this.waiting.clear();
      this.onPush({ type: '_disconnected' });
      if (this.closed) return;
      if (!opened) this.failures++;
      // A browser hides the HTTP refusal of a WebSocket; a first connection that never
      // opens while the server answers HTTP is almost always a refused token.
      if (!this.everOpened && this.failures >= 2) {
        this.onFatal('The server refused the connection: the access token is invalid or expired.');
        return;
      }
      // A long session can outlive its token; retrying with it would fail forever.
      const problem = this.failures >= 2 && tokenProblem(this.token);
      if (problem) {
        this.onFatal(problem);
        return;
      }
      this.onStatus(this.restarting || ev.code === 1001 ? 'restarting' : 'reconnecting');
      const delay = RETRY_MS[Math.min(this.failures, RETRY_MS.length - 1)];
      this.timer = setTimeout(() => this.connect(), delay);
    };
  }

  // Sends a message; returns its request id.
  send(msg) {
    msg.id = this.nextId++;
    if (this.ws?.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(msg));
    return msg.id;
  }

  // Sends a request and resolves with its response (rejects with an error response).
  request(msg) {
    return new Promise((resolve, reject) => {
      if (this.ws?.readyState !== WebSocket.OPEN) {
        reject({ code: 'disconnected', message: 'not connected' });
        return;
      }
      const id = this.send(msg);
      this.waiting.set(id, { resolve, reject });
    });
  }

  // Ends the session (close code 1000: the server ends it at once).
  close() {
    this.closed = true;
    clearTimeout(this.timer);
    this.ws?.close(1000);
  }
}

// What a token says about itself, to explain a refusal before connecting. The server
// still checks the signature; this only catches a garbled or expired token early.
export function tokenProblem(token) {
  const parts = token.split('.');
  if (parts.length !== 3) return 'The access token is not a valid token.';
  try {
    const claims = JSON.parse(atob(parts[1].replace(/-/g, '+').replace(/_/g, '/')));
    if (typeof claims.exp === 'number' && claims.exp * 1000 < Date.now()) {
      return 'The access token has expired: ask for a new link.';
    }
  } catch {
    return 'The access token is not a valid token.';
  }
  return null;
}
