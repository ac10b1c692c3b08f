// Drives the `sockeye serve` chat demo page in headless Chromium (scripts/browser.sh).
//
// Starts `sockeye serve --mode broadcast` on a free loopback port and opens three pages: A1 and
// A2 in room "alpha", B in room "beta". A1 and A2 exchange messages both ways and B sees none of
// them. Then the server is killed (SIGKILL), every page must show the disconnected state, the
// server is restarted on the same port, every page must reconnect on its own, and A1 and A2 chat
// again. A screenshot goes to target/browser/demo.png. Before the kill, a WebSocket opened by A1
// closes with 4321 and a UTF-8 reason and must get both back (close-echo.mjs). Every wait is
// bounded; any failure exits non-zero with a message.
//
// Environment: SOCKEYE_BIN (default target/debug/sockeye), CHROMIUM (default /usr/bin/chromium).

import { spawn } from "node:child_process";
import { mkdirSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";
import { checkCloseEcho } from "./close-echo.mjs";

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
const BIN = process.env.SOCKEYE_BIN || resolve(ROOT, "target/debug/sockeye");
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const SCREENSHOT = resolve(ROOT, "target/browser/demo.png");
/** Bound on one expected event (a message arriving, a page connecting). */
const WAIT_MS = 15000;
/** Bound on reconnecting after the restart: the pages' backoff is at most 10 s plus a try. */
const RECONNECT_MS = 30000;
/** Bound on the whole run. */
const TOTAL_MS = 180000;

let server = null;
let browser = null;

function fail(message) {
  throw new Error(message);
}

/** Starts the server (on `port`, 0 for a free one); resolves with the process and its port. */
function startServer(port) {
  return new Promise((resolvePromise, reject) => {
    const child = spawn(BIN, ["serve", "--listen", `127.0.0.1:${port}`, "--mode", "broadcast"], {
      stdio: ["ignore", "pipe", "inherit"],
      env: { ...process.env, RUST_LOG: process.env.RUST_LOG || "info" },
    });
    let output = "";
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`sockeye serve did not print its URL within ${WAIT_MS} ms: ${output}`));
    }, WAIT_MS);
    child.on("error", (e) => {
      clearTimeout(timer);
      reject(new Error(`cannot run ${BIN}: ${e.message}`));
    });
    child.on("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`sockeye serve exited early with ${code}: ${output}`));
    });
    child.stdout.on("data", (chunk) => {
      output += chunk;
      const found = output.match(/ws:\/\/127\.0\.0\.1:(\d+)\//);
      if (found) {
        clearTimeout(timer);
        child.stdout.resume();
        resolvePromise({ child, port: Number(found[1]) });
      }
    });
  });
}

/** Kills the server with SIGKILL (a crash: no close frames) and waits for it to exit. */
function killServer() {
  const child = server.child;
  server = null;
  return new Promise((resolvePromise) => {
    if (child.exitCode !== null || child.signalCode !== null) return resolvePromise();
    child.removeAllListeners("exit");
    child.once("exit", () => resolvePromise());
    child.kill("SIGKILL");
  });
}

async function openPage(context, port, name, room) {
  const page = await context.newPage();
  page.on("pageerror", (e) => console.error(`browser: ${name}: page error: ${e.message}`));
  page.on("console", (m) => {
    // Refused reconnection attempts while the server is down are expected.
    if (m.type() === "error" && !m.text().includes("ERR_CONNECTION_REFUSED")) console.error(`browser: ${name}: console: ${m.text()}`);
  });
  const url = `http://127.0.0.1:${port}/?name=${name}&room=${room}`;
  const response = await page.goto(url, { timeout: WAIT_MS });
  if (!response || response.status() !== 200) fail(`${name}: GET ${url} -> ${response?.status()}`);
  return { page, name, room };
}

async function waitState(client, state, timeout) {
  try {
    await client.page.waitForSelector(`#state[data-state="${state}"]`, { timeout });
  } catch {
    const shown = await client.page.textContent("#state");
    fail(`${client.name}: not "${state}" within ${timeout} ms (shows "${shown}")`);
  }
}

/** The remote messages a page shows, as "name: text" lines. */
function remoteMessages(client) {
  return client.page.$$eval("#messages li.remote", (items) => items.map((li) => li.textContent));
}

async function say(client, text) {
  await client.page.fill("#text", text);
  await client.page.click("#send");
}

async function waitMessage(client, from, text) {
  const line = `${from}:${text}`;
  try {
    await client.page.waitForFunction(
      (expected) =>
        [...document.querySelectorAll("#messages li.remote")].some(
          (li) => li.textContent === expected,
        ),
      line,
      { timeout: WAIT_MS },
    );
  } catch {
    fail(`${client.name} did not receive "${line}" within ${WAIT_MS} ms; it shows ` +
      JSON.stringify(await remoteMessages(client)));
  }
}

/**
 * A1 and A2 exchange one message each way; B must not see them. B2, in B's room, then says
 * something to B: a connection delivers in order, so had the server leaked room alpha's
 * messages to B, B would show them before B2's (no fixed wait that a slow machine outlasts).
 */
async function chat(a1, a2, b, b2, round) {
  const hello = `hello from A1, round ${round} <b>not bold</b>`;
  const reply = `reply from A2, round ${round} & "quotes"`;
  await say(a1, hello);
  await waitMessage(a2, "A1", hello);
  await say(a2, reply);
  await waitMessage(a1, "A2", reply);
  const sentinel = `B2 to B, round ${round}`;
  await say(b2, sentinel);
  await waitMessage(b, "B2", sentinel);
  const leaked = (await remoteMessages(b)).filter((line) => !line.startsWith("B2:"));
  if (leaked.length > 0) fail(`B (room beta) received room alpha's messages: ${JSON.stringify(leaked)}`);
  const bold = await a2.page.$$eval("#messages b", (found) => found.length);
  if (bold !== 0) fail("a message was rendered as HTML");
  for (const client of [a1, a2]) {
    const own = await client.page.$$eval("#messages li.mine", (items) => items.length);
    if (own !== round) fail(`${client.name} shows ${own} own messages, expected ${round}`);
  }
  console.log(`browser: round ${round}: A1 <-> A2 delivered, B saw only B2's message`);
}

async function main() {
  server = await startServer(0);
  const port = server.port;
  console.log(`browser: sockeye serve on 127.0.0.1:${port}`);
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    timeout: WAIT_MS * 2,
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      "--no-proxy-server",
    ],
  });
  console.log(`browser: Chromium ${browser.version()}`);
  const context = await browser.newContext({ viewport: { width: 900, height: 640 } });
  const a1 = await openPage(context, port, "A1", "alpha");
  const a2 = await openPage(context, port, "A2", "alpha");
  const b = await openPage(context, port, "B", "beta");
  const b2 = await openPage(context, port, "B2", "beta");
  const pages = [a1, a2, b, b2];
  for (const client of pages) await waitState(client, "open", WAIT_MS);
  console.log("browser: four pages connected");
  await chat(a1, a2, b, b2, 1);
  const echoed = await checkCloseEcho(a1.page, `ws://127.0.0.1:${port}/room/close-check`, WAIT_MS);
  console.log(`browser: closed with ${echoed.code} ${JSON.stringify(echoed.reason)}: echoed back`);

  await killServer();
  for (const client of pages) await waitState(client, "disconnected", WAIT_MS);
  console.log("browser: server killed; every page shows the disconnected state");
  // Let the pages fail a few reconnection attempts while the server is down.
  await a1.page.waitForTimeout(1500);
  server = await startServer(port);
  for (const client of pages) await waitState(client, "open", RECONNECT_MS);
  console.log("browser: server restarted on the same port; every page reconnected");
  await chat(a1, a2, b, b2, 2);

  mkdirSync(dirname(SCREENSHOT), { recursive: true });
  await a1.page.screenshot({ path: SCREENSHOT });
  console.log(`browser: screenshot ${SCREENSHOT}`);
}

const watchdog = setTimeout(() => {
  console.error(`browser: FAILED: the run took longer than ${TOTAL_MS} ms`);
  if (server) server.child.kill("SIGKILL");
  process.exit(1);
}, TOTAL_MS);

let status = 0;
try {
  await main();
  console.log("browser: OK");
} catch (e) {
  console.error(`browser: FAILED: ${e.message}`);
  status = 1;
} finally {
  if (browser) await browser.close().catch(() => {});
  if (server) await killServer();
  clearTimeout(watchdog);
}
process.exit(status);
