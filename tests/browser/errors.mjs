// Errors in the web demo are shown in plain words, in headless Chromium: a full room
// (the Rust test runs the server with rooms.max_participants = 2), a member beyond the
// room's publishers (sfu.max_publishers_per_room = 1) told and then admitted, a garbled, an expired
// and a forged access token in the link, and a browser that denies camera and microphone
// (no fake-UI flag: headless Chromium then refuses) — that page can still join to watch.
// Usage: node errors.mjs <base-url>. Prints one JSON line last; exits non-zero on failure.
import { launch, open, run, shot, text } from './lib.mjs';

const base = process.argv[2];
const browser = await launch();

const errorShown = (page, part) => page.waitForFunction(
  (part) => document.querySelector('#error').textContent.includes(part), part, { timeout: 15000 },
).catch(async () => { throw new Error(`expected an error with "${part}", page shows "${await text(page, '#error')}"`); });
const b64url = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
const jwt = (claims) => `${b64url({ alg: 'HS256', typ: 'JWT' })}.${b64url(claims)}.${Buffer.from('not the signature').toString('base64url')}`;

await run(browser, async (report) => {
  // Room full: the third page is told and stays on the pre-join screen.
  const a = await open(browser, `${base}/?room=small&name=A&autojoin=1`);
  const b = await open(browser, `${base}/?room=small&name=B&autojoin=1`);
  await b.waitForFunction(() => document.querySelectorAll('#participants li').length === 2, null, { timeout: 15000 });
  const c = await open(browser, `${base}/?room=small&name=C&autojoin=1`);
  await errorShown(c, 'is full');
  await c.waitForSelector('#prejoin-view', { state: 'visible' });
  report.room_full = await text(c, '#error');
  await shot(c, 'error-room-full');
  report.others_unaffected = await a.$$eval('#participants li', (l) => l.length);

  // One publisher per room (sfu.max_publishers_per_room = 1): whichever of A and B
  // offered its tracks second (the pages join at once, so either may) is told its camera
  // and microphone are not shared and still sees the other; once the other leaves, they
  // are.
  const notices = (page) => page.evaluate(() => window.huddleEvents);
  const noticed = (page, part) => page.waitForFunction(
    (part) => window.huddleEvents.some((e) => e.includes(part)), part, { timeout: 20000 },
  ).catch(async () => {
    throw new Error(`expected a notice with "${part}", got ${JSON.stringify(await notices(page))}`);
  });
  let listener = null;
  let speaker = null;
  for (let i = 0; i < 80 && !listener; i++) {
    if ((await notices(b)).some((e) => e.includes('is not shared'))) [listener, speaker] = [b, a];
    else if ((await notices(a)).some((e) => e.includes('is not shared'))) [listener, speaker] = [a, b];
    else await b.waitForTimeout(250);
  }
  if (!listener) {
    throw new Error(`expected a notice with "is not shared" on A or B, got ${JSON.stringify({ a: await notices(a), b: await notices(b) })}`);
  }
  report.refused_page = listener === a ? 'A' : 'B';
  await listener.waitForFunction(() => {
    const v = document.querySelector('.tile:not([data-sid="local"]) video');
    return v && v.videoWidth > 0;
  }, null, { timeout: 15000 });
  report.refused = await listener.evaluate(() => window.huddleEvents.filter((e) => e.includes('not shared')));
  await speaker.click('#leave');
  await noticed(listener, 'shared now');
  report.admitted = await listener.evaluate(() => window.huddleEvents.filter((e) => e.includes('shared now')));

  // Tokens in the link.
  const garbled = await open(browser, `${base}/?room=t&name=X&autojoin=1&token=not-a-token`);
  await errorShown(garbled, 'not a valid token');
  report.garbled_token = await text(garbled, '#error');
  const now = Math.floor(Date.now() / 1000);
  const expired = await open(browser, `${base}/?room=t&name=X&autojoin=1&token=${jwt({ sub: 'x', iss: 'huddle', exp: now - 3600 })}`);
  await errorShown(expired, 'expired');
  report.expired_token = await text(expired, '#error');
  const forged = await open(browser, `${base}/?room=t&name=X&autojoin=1&token=${jwt({ sub: 'x', iss: 'huddle', room: '*', exp: now + 3600 })}`);
  await errorShown(forged, 'refused');
  await forged.waitForSelector('#prejoin-view', { state: 'visible' });
  report.forged_token = await text(forged, '#error');
  await shot(forged, 'error-token');

  // Camera and microphone denied by the browser.
  const strict = await launch(['--use-fake-device-for-media-stream', '--autoplay-policy=no-user-gesture-required']);
  try {
    const d = await (await strict.newContext({ viewport: { width: 1280, height: 800 } })).newPage();
    await d.goto(`${base}/?room=watch&name=Dee`);
    await errorShown(d, 'denied');
    report.denied = await text(d, '#error');
    await d.click('#join');
    await d.waitForFunction(() => document.querySelector('#status').textContent === 'connected', null, { timeout: 15000 });
    await d.waitForFunction(() => document.querySelectorAll('#participants li').length === 1, null, { timeout: 15000 });
    report.denied_joined = {
      local_video_off: await d.$eval('.tile[data-sid="local"]', (t) => t.classList.contains('video-off')),
      mic_disabled: await d.$eval('#mic', (e) => e.disabled),
    };
    await shot(d, 'error-camera-denied');
  } finally {
    await strict.close();
  }
});
