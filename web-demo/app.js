// huddle demo client: dev token, join a room, live participant list, room chat, and
// reconnect (with the resume token) after a network drop or a server restart.
import { RoomChat } from './chat.js';

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
$('name').value = params.get('name') || '';
$('room').value = params.get('room') || 'lobby';

let ws = null;
let resumeToken = null;
let token = null;
let room = null;
let leaving = false;
let nextId = 1;
let chat = null;
const participants = new Map();
const names = new Map(); // identity -> display name, kept after they leave

function render() {
  const ul = $('participants');
  ul.replaceChildren(...[...participants.values()].map((p) => {
    const li = document.createElement('li');
    li.textContent = p.name + (p.identity === window.huddleIdentity ? ' (you)' : '');
    return li;
  }));
}

function remember(p) {
  participants.set(p.identity, p);
  names.set(p.identity, p.name);
}

// Sends a request and returns its id.
function send(msg) {
  msg.id = nextId++;
  if (ws?.readyState === WebSocket.OPEN) ws.send(JSON.stringify(msg));
  return msg.id;
}

function connect() {
  const url = new URL('/v1/ws', location.href);
  url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
  url.searchParams.set('access_token', token);
  if (resumeToken) url.searchParams.set('resume_token', resumeToken);
  ws = new WebSocket(url);
  $('status').textContent = 'connecting…';
  ws.onmessage = (ev) => {
    const m = JSON.parse(ev.data);
    if (chat?.handle(m)) return;
    switch (m.type) {
      case 'welcome':
        resumeToken = m.resume_token;
        window.huddleIdentity = m.identity;
        names.set(m.identity, m.name);
        $('status').textContent = 'connected';
        if (!m.resumed) send({ type: 'join', room });
        chat.connected(m.identity);
        break;
      case 'joined':
        participants.clear();
        for (const p of m.participants) remember(p);
        render();
        break;
      case 'participant_joined':
      case 'participant_updated':
        remember(m.participant);
        render();
        break;
      case 'participant_left':
        participants.delete(m.identity);
        render();
        break;
      case 'shutdown':
        $('status').textContent = 'server restarting…';
        break;
      case 'error':
        $('error').textContent = `${m.code}: ${m.message}`;
        break;
    }
  };
  ws.onclose = () => {
    chat?.disconnected();
    if (leaving) return;
    $('status').textContent = 'reconnecting…';
    setTimeout(connect, 1500);
  };
}

$('join-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  $('error').textContent = '';
  room = $('room').value;
  // The tab keeps its identity across reloads, so its own messages stay its own.
  const identity = sessionStorage.getItem('huddle.identity') || undefined;
  const resp = await fetch('/v1/dev/token', {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ name: $('name').value, room, identity }),
  });
  if (!resp.ok) {
    $('error').textContent = 'Could not get a token (is the server in --dev mode?)';
    return;
  }
  const body = await resp.json();
  token = body.token;
  if (body.identity) sessionStorage.setItem('huddle.identity', body.identity);
  leaving = false;
  $('room-name').textContent = room;
  $('join-form').hidden = true;
  $('room-view').hidden = false;
  $('chat-log').replaceChildren();
  chat = new RoomChat({
    room,
    send,
    nameOf: (identity) => names.get(identity) || identity,
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
  connect();
});

$('leave').addEventListener('click', () => {
  leaving = true;
  resumeToken = null;
  ws?.close(1000);
  participants.clear();
  render();
  chat = null;
  $('room-view').hidden = true;
  $('join-form').hidden = false;
});

if (params.get('autojoin') === '1' && $('name').value) $('join').click();
