// Shared pieces of the web demo's browser tests: Debian's chromium with fake camera,
// microphone and screen, one browser context per participant (its own tab identity),
// waiting for remote videos to play, screenshots under target/e2e/, and the
// stdin handshake the Rust tests use to restart the server.
import { chromium } from 'playwright-core';
import { mkdirSync } from 'node:fs';
import net from 'node:net';
import readline from 'node:readline';

export const FLAGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync'];
export const FAKE_MEDIA = ['--use-fake-ui-for-media-stream', '--use-fake-device-for-media-stream',
  '--autoplay-policy=no-user-gesture-required', '--auto-select-desktop-capture-source=Entire screen'];

export function launch(extra = FAKE_MEDIA) {
  return chromium.launch({ executablePath: process.env.CHROMIUM || '/usr/bin/chromium', args: [...FLAGS, ...extra] });
}

// A new participant: its own context (storage, identity) and page.
export async function open(browser, url, { colorScheme = 'light', width = 1280, height = 800 } = {}) {
  const ctx = await browser.newContext({ viewport: { width, height }, colorScheme });
  const page = await ctx.newPage();
  page.on('pageerror', (e) => console.error(`page error: ${e}`));
  await page.goto(url);
  return page;
}

const shotDir = process.env.HUDDLE_E2E_DIR || new URL('../../target/e2e/', import.meta.url).pathname;
mkdirSync(shotDir, { recursive: true });
export function shot(page, name) {
  return page.screenshot({ path: `${shotDir}/${name}.png` });
}

// Waits until exactly `n` remote videos have a picture and play on (currentTime and the
// count of frames shown grow).
export function playing(page, n, timeout = 30000) {
  return page.waitForFunction((n) => {
    const vids = [...document.querySelectorAll('.tile:not([data-sid="local"]) video')];
    // Frames shown, not only the element's clock, which runs on while the picture
    // stands still (a camera the SFU paused).
    const now = vids.map((v) => [v.currentTime, v.getVideoPlaybackQuality().totalVideoFrames]);
    const prev = window.__prevTimes || [];
    window.__prevTimes = now;
    return vids.length === n && prev.length === n
      && vids.every((v, i) => v.videoWidth > 0 && now[i][0] > prev[i][0] && now[i][1] > prev[i][1]);
  }, n, { timeout, polling: 500 }).catch(async () => {
    const state = await page.evaluate(() => ({
      tiles: [...document.querySelectorAll('.tile')].map((t) => t.dataset.sid),
      widths: [...document.querySelectorAll('.tile video')].map((v) => v.videoWidth),
      connection: document.querySelector('#grid')?.dataset.connection,
      error: document.querySelector('#error')?.textContent,
    }));
    throw new Error(`expected ${n} playing remote videos: ${JSON.stringify(state)}`);
  });
}

export const text = (page, sel) => page.$eval(sel, (e) => e.textContent.trim());

// Prints `word` and waits for the Rust side to answer with a line on stdin.
const lines = readline.createInterface({ input: process.stdin });
export function handshake(word) {
  console.log(word);
  return new Promise((resolve) => lines.once('line', resolve));
}

// Runs `body(report)`, then prints the report as the last line and exits (non-zero on error).
export async function run(browser, body) {
  const report = {};
  try {
    await body(report);
    report.ok = true;
  } catch (e) {
    report.error = String(e?.stack || e);
  } finally {
    await browser.close();
    lines.close();
    console.log(JSON.stringify(report));
    process.exit(report.ok ? 0 : 1);
  }
}

// A TCP proxy in front of `base` whose connections can be cut at once (TCP reset, no
// WebSocket close frame): a network drop as the browser and the server see it.
export async function dropProxy(base) {
  const { hostname, port } = new URL(base);
  const sockets = new Set();
  const server = net.createServer((client) => {
    const upstream = net.connect(Number(port), hostname);
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on('error', () => {});
      s.on('close', () => {
        sockets.delete(s);
        client.destroy();
        upstream.destroy();
      });
    }
    client.pipe(upstream);
    upstream.pipe(client);
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${server.address().port}`,
    cut() {
      for (const s of sockets) s.resetAndDestroy();
    },
  };
}
