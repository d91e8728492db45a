// Minimal huddle signalling client: dev token, join a room, live participant list,
// reconnect with the resume token after a network drop.
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
const participants = new Map();

function render() {
  const ul = $('participants');
  ul.replaceChildren(...[...participants.values()].map((p) => {
    const li = document.createElement('li');
    li.textContent = p.name + (p.identity === window.huddleIdentity ? ' (you)' : '');
    return li;
  }));
}

function send(msg) {
  msg.id = nextId++;
  ws.send(JSON.stringify(msg));
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
    switch (m.type) {
      case 'welcome':
        resumeToken = m.resume_token;
        window.huddleIdentity = m.identity;
        $('status').textContent = 'connected';
        if (!m.resumed) send({ type: 'join', room });
        break;
      case 'joined':
        participants.clear();
        for (const p of m.participants) participants.set(p.identity, p);
        render();
        break;
      case 'participant_joined':
      case 'participant_updated':
        participants.set(m.participant.identity, m.participant);
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
    if (leaving) return;
    $('status').textContent = 'reconnecting…';
    setTimeout(connect, 1500);
  };
}

$('join-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  $('error').textContent = '';
  room = $('room').value;
  const resp = await fetch('/v1/dev/token', {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ name: $('name').value, room }),
  });
  if (!resp.ok) {
    $('error').textContent = 'Could not get a token (is the server in --dev mode?)';
    return;
  }
  token = (await resp.json()).token;
  leaving = false;
  $('room-name').textContent = room;
  $('join-form').hidden = true;
  $('room-view').hidden = false;
  connect();
});

$('leave').addEventListener('click', () => {
  leaving = true;
  resumeToken = null;
  ws?.close(1000);
  participants.clear();
  render();
  $('room-view').hidden = true;
  $('join-form').hidden = false;
});

if (params.get('autojoin') === '1' && $('name').value) $('join').click();
