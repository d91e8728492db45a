// huddle demo client: dev token, join a room, live participant list, audio and video
// through the SFU, room chat, and reconnect (with the resume token) after a network drop
// or a server restart.
import { RoomChat } from './chat.js';
import { RoomMedia } from './media.js';

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
let media = null;
const participants = new Map();
const names = new Map(); // identity -> display name, kept after they leave
const sidNames = new Map(); // sid -> display name
const waiting = new Map(); // request id -> {resolve, reject}

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
  sidNames.set(p.sid, p.name);
  media?.rename(p.sid, p.name);
}

// Sends a request and resolves with its response (rejects with an error response).
function request(msg) {
  return new Promise((resolve, reject) => {
    const id = send(msg);
    waiting.set(id, { resolve, reject });
  });
}

// Camera and microphone, or what of them is available; null to receive only.
async function localMedia() {
  for (const c of [{ audio: true, video: true }, { audio: true }, { video: true }]) {
    try {
      return await navigator.mediaDevices.getUserMedia(c);
    } catch (e) {
      $('error').textContent = `Camera/microphone: ${e.name}. ${c.video && c.audio ? 'Trying less…' : ''}`;
    }
  }
  $('error').textContent = 'No camera or microphone: you can see and hear the others only.';
  return null;
}

async function startMedia(joined) {
  try {
    const local = media.local || (await localMedia());
    await media.start(local, joined.ice_servers, joined.participant.sid);
  } catch (e) {
    $('error').textContent = `Media: ${e.message || e.code || e}`;
  }
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
    const w = m.id !== undefined && waiting.get(m.id);
    if (w) {
      waiting.delete(m.id);
      if (m.type === 'error') w.reject(m);
      else w.resolve(m);
      return;
    }
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
        startMedia(m);
        break;
      case 'media_offer':
        media?.onOffer(m);
        break;
      case 'active_speaker':
        media?.speaker(m.sid);
        break;
      case 'participant_joined':
      case 'participant_updated':
        remember(m.participant);
        render();
        break;
      case 'participant_left':
        participants.delete(m.identity);
        media?.participantLeft(m.sid);
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
    for (const [, w] of waiting) w.reject({ code: 'disconnected', message: 'connection lost' });
    waiting.clear();
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
  media = new RoomMedia({
    request,
    send,
    grid: $('grid'),
    nameOfSid: (sid) => sidNames.get(sid) || 'guest',
    relay: params.get('relay') === '1',
  });
  window.huddleMedia = media; // for the browser tests and the console
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
  media?.leave();
  media = null;
  chat = null;
  $('room-view').hidden = true;
  $('join-form').hidden = false;
});

if (params.get('autojoin') === '1' && $('name').value) $('join').click();
