// huddle demo app: the pre-join screen (name, room, devices, invite link), the access
// token (the dev endpoint under `huddle serve --dev`, otherwise `?token=` from the app's
// backend), the signalling session, rooms (room.js) and one-to-one calls (direct.js), and
// telling the user what the connection is doing. docs/web-demo.md describes the URL options.
import { DirectCalls } from './direct.js';
import { Devices } from './prejoin.js';
import { Room } from './room.js';
import { Signal, tokenProblem } from './signal.js';

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
$('name').value = params.get('name') || '';
$('room').value = params.get('room') || 'lobby';
$('handle').value = params.get('me') || '';
const relay = params.get('relay') === '1';
const urlToken = params.get('token');

let signal = null; // the signalling session, while there is one
let welcome = null; // its last welcome
let room = null; // the room joined, if any
let direct = null; // one-to-one calls, while online
let mode = null; // 'room' or 'direct'
const events = []; // every notice shown, in order (read by the tests)
window.huddleEvents = events;

const devices = new Devices({
  video: $('preview'),
  camSelect: $('camera-select'),
  micSelect: $('mic-select'),
  meter: $('meter'),
  // Clears only its own message, not one about the session.
  onError: (text) => {
    if (text) showError(text);
    else if ($('error').dataset.source === 'devices') showError('');
    $('error').dataset.source = text ? 'devices' : '';
  },
});
window.huddleDevices = devices;

function showError(text) {
  $('error').textContent = text;
  $('error').dataset.source = '';
}

let noticeTimer = 0;
// A short message about what is happening; `sticky` ones stay until the next.
function notify(text, sticky = false) {
  events.push(text);
  const n = $('notice');
  n.textContent = text;
  n.hidden = false;
  clearTimeout(noticeTimer);
  if (!sticky) noticeTimer = setTimeout(() => (n.hidden = true), 4000);
}

const STATUS = {
  connecting: 'connecting…',
  connected: 'connected',
  reconnecting: 'reconnecting…',
  restarting: 'server restarting…',
};

function onStatus(state, detail) {
  if (state === document.body.dataset.connection && state !== 'connected') return;
  $('status').textContent = STATUS[state];
  document.body.dataset.connection = state;
  if (state === 'reconnecting') notify('Connection lost. Reconnecting…', true);
  if (state === 'restarting') notify('The server is restarting. Rejoining when it is back…', true);
  // A fresh session back in a room says "Rejoined" once the join went through (room.js).
  if (state === 'connected' && detail.again && (detail.resumed || !room)) notify('Reconnected.');
}

function shareLink(roomName) {
  return `${location.origin}/?room=${encodeURIComponent(roomName)}`;
}

function updateShareLink() {
  const link = shareLink($('room').value || 'lobby');
  $('share-link').href = link;
  $('share-link').textContent = link;
}

// Plain words for a refused join.
function joinErrorText(e, roomName) {
  switch (e.code) {
    case 'room_full':
      return `The room “${roomName}” is full. Try again later or pick another room.`;
    case 'forbidden':
      return `Your access token does not allow joining “${roomName}”.`;
    case 'invalid_room':
      return `“${roomName}” is not a valid room name (letters, digits and - _ . ~).`;
    case 'too_many_rooms':
      return 'The server has too many rooms open right now. Try again later.';
    default:
      return `Could not join: ${e.message || e.code}`;
  }
}

async function getToken({ name, room: roomName, identity }) {
  if (urlToken) {
    const problem = tokenProblem(urlToken);
    if (problem) throw new Error(problem);
    return { token: urlToken };
  }
  let resp;
  try {
    resp = await fetch('/v1/dev/token', {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ name, room: roomName, identity }),
    });
  } catch {
    throw new Error('The server cannot be reached.');
  }
  if (resp.status === 404 || resp.status === 405) {
    throw new Error('This server is not in development mode: open the link your app gave you (it carries ?token=…).');
  }
  const body = await resp.json().catch(() => ({}));
  if (!resp.ok) throw new Error(`No access token: ${body.message || resp.status}`);
  return body;
}

function startSignal(token) {
  signal = new Signal({
    token,
    onStatus,
    onWelcome: (m) => {
      welcome = m;
      window.huddleIdentity = m.identity;
      room?.connected(m).catch((e) => joinFailed(e));
    },
    onPush: (m) => {
      if (m.type === '_disconnected') return room?.disconnected();
      if (direct?.handle(m) || room?.handle(m)) return;
      if (m.type === 'error') showError(`${m.code}: ${m.message}`);
    },
    onFatal: (text) => {
      showError(text);
      endSession();
    },
  });
  window.huddleSignal = signal;
  direct = new DirectCalls({
    signal,
    els: {
      dialog: $('call-dialog'),
      text: $('call-text'),
      accept: $('call-accept'),
      reject: $('call-reject'),
      cancel: $('call-cancel'),
      close: $('call-close'),
    },
    busy: () => room !== null || mode !== 'direct',
    enterRoom: async (roomName, peer) => {
      await devices.ready;
      enterRoom(roomName, `Call with ${peer}`);
      room.connected({ ...welcome, resumed: false }).catch((e) => joinFailed(e));
    },
    leaveRoom: () => exitRoom(true),
    notify,
    showError,
  });
  window.huddleDirect = direct;
  signal.connect();
}

function enterRoom(roomName, label) {
  const local = devices.take();
  room = new Room({
    signal,
    room: roomName,
    name: $('name').value.trim() || $('handle').value,
    local,
    relay,
    muted: { audio: $('join-muted-audio').checked, video: $('join-muted-video').checked },
    notify,
    showError,
    onRemoved: (text) => {
      showError(text);
      leave();
    },
  });
  $('room-label').textContent = label;
  $('room-name').textContent = mode === 'room' ? roomName : '';
  $('copy-link').hidden = mode !== 'room';
  document.title = `${label} ${mode === 'room' ? roomName : ''} · huddle`;
  $('prejoin-view').hidden = true;
  $('room-view').hidden = false;
  $('mic').focus();
  if (!local) notify('You joined without camera and microphone: the others cannot see or hear you.');
}

function joinFailed(e) {
  if (!room) return;
  const text = joinErrorText(e, room.room);
  if (e.code === 'disconnected') return; // the reconnect will try again
  if (mode === 'direct') direct.hangup();
  leave();
  showError(text);
}

// Back to the pre-join screen, with the preview running again.
function exitRoom(tellServer) {
  room?.leave({ tellServer });
  room = null;
  $('room-view').hidden = true;
  $('prejoin-view').hidden = false;
  document.title = 'huddle';
  devices.open();
}

function endSession() {
  signal?.close();
  signal = null;
  direct = null;
  mode = null;
  exitRoom(false);
  $('call-form').hidden = true;
  $('online-form').hidden = false;
}

function leave() {
  if (mode === 'direct') {
    direct.hangup();
    exitRoom(true);
  } else {
    endSession();
  }
}

$('join-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  if (signal) endSession();
  showError('');
  const roomName = $('room').value;
  // The tab keeps its identity across reloads, so its own messages stay its own.
  const identity = sessionStorage.getItem('huddle.identity') || undefined;
  let tok;
  try {
    tok = await getToken({ name: $('name').value.trim(), room: roomName, identity });
  } catch (e) {
    showError(e.message);
    return;
  }
  if (tok.identity) sessionStorage.setItem('huddle.identity', tok.identity);
  await devices.ready;
  mode = 'room';
  startSignal(tok.token);
  enterRoom(roomName, 'Room');
});

$('online-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  showError('');
  const handle = $('handle').value;
  let tok;
  try {
    tok = await getToken({ name: $('name').value.trim() || handle, identity: handle });
  } catch (e) {
    showError(e.message);
    return;
  }
  mode = 'direct';
  startSignal(tok.token);
  $('online-form').hidden = true;
  $('call-form').hidden = false;
  $('online-as').textContent = `You are online as “${handle}”. Others can call you by this handle.`;
  $('callee').focus();
});

$('call-form').addEventListener('submit', (ev) => {
  ev.preventDefault();
  showError('');
  direct?.place($('callee').value.trim());
});

$('leave').addEventListener('click', () => leave());
$('copy-link').addEventListener('click', async () => {
  const link = shareLink(room?.room || $('room').value);
  try {
    await navigator.clipboard.writeText(link);
    notify('Invite link copied.');
  } catch {
    notify(`Invite link: ${link}`);
  }
});
$('room').addEventListener('input', updateShareLink);
updateShareLink();

await devices.open();
if (params.get('autojoin') === '1' && $('name').value) $('join').click();
