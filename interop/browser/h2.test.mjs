// The `sockeye serve` chat demo page over HTTPS with HTTP/2 in headless Chromium
// (scripts/browser.sh): WebSockets over HTTP/2 (RFC 8441) with a real browser.
//
// Makes a throwaway self-signed certificate with openssl (in a temporary directory, removed at
// the end), starts `sockeye serve --mode broadcast --http2 --tls-cert --tls-key` on a free
// loopback port with RUST_LOG=info, and opens two pages of room "alpha" in Chromium launched
// with --ignore-certificate-errors in a fresh temporary profile. The pages exchange a message
// each way. Then the proof that the WebSockets went over HTTP/2 comes from the server's own
// access log: its "connection open" lines for path /room/alpha must say http=HTTP/2.0 (none
// HTTP/1.1), its "http request" line for the page must say HTTP/2.0 too, and the browser's
// navigation timing must report the page's protocol as "h2". A WebSocket over HTTP/2 opened by
// A1 closes with 4321 and a UTF-8 reason and must get both back (close-echo.mjs). Every wait is
// bounded; any failure exits non-zero with a message.
//
// Environment: SOCKEYE_BIN (default target/debug/sockeye), CHROMIUM (default /usr/bin/chromium).

import { execFileSync, spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";
import { checkCloseEcho } from "./close-echo.mjs";

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
const BIN = process.env.SOCKEYE_BIN || resolve(ROOT, "target/debug/sockeye");
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
/** Bound on one expected event (a message arriving, a page connecting, a log line). */
const WAIT_MS = 15000;
/** Bound on the whole run. */
const TOTAL_MS = 120000;

let server = null;
let browser = null;
let scratch = null;

function fail(message) {
  throw new Error(message);
}

/** Without terminal colour codes, should the log have any. */
function plain(text) {
  // eslint-disable-next-line no-control-regex
  return text.replace(/\x1b\[[0-9;]*m/g, "");
}

/** A self-signed certificate for 127.0.0.1 and localhost, made with openssl. */
function makeCertificate(dir) {
  const cert = join(dir, "cert.pem");
  const key = join(dir, "key.pem");
  execFileSync(
    "openssl",
    [
      "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
      "-keyout", key, "-out", cert, "-days", "2", "-subj", "/CN=localhost",
      "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
    ],
    { stdio: ["ignore", "ignore", "pipe"], timeout: WAIT_MS },
  );
  return { cert, key };
}

/** Starts the server on a free port; resolves with the process, its port and its log. */
function startServer(tls) {
  return new Promise((resolvePromise, reject) => {
    const args = [
      "serve", "--listen", "127.0.0.1:0", "--mode", "broadcast", "--http2",
      "--tls-cert", tls.cert, "--tls-key", tls.key,
    ];
    const child = spawn(BIN, args, {
      stdio: ["ignore", "pipe", "pipe"],
      env: { ...process.env, RUST_LOG: "info", NO_COLOR: "1" },
    });
    const state = { child, port: 0, log: "" };
    child.stderr.on("data", (chunk) => {
      state.log += plain(chunk.toString());
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
      reject(new Error(`sockeye serve exited early with ${code}: ${output}${state.log}`));
    });
    child.stdout.on("data", (chunk) => {
      output += chunk;
      const found = output.match(/wss:\/\/127\.0\.0\.1:(\d+)\/ \(.*http\/2/);
      if (found) {
        clearTimeout(timer);
        child.stdout.resume();
        state.port = Number(found[1]);
        resolvePromise(state);
      }
    });
  });
}

function stopServer() {
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
    if (m.type() === "error") console.error(`browser: ${name}: console: ${m.text()}`);
  });
  const url = `https://127.0.0.1:${port}/?name=${name}&room=${room}`;
  const response = await page.goto(url, { timeout: WAIT_MS });
  if (!response || response.status() !== 200) fail(`${name}: GET ${url} -> ${response?.status()}`);
  const protocol = await page.evaluate(
    () => performance.getEntriesByType("navigation")[0]?.nextHopProtocol,
  );
  if (protocol !== "h2") fail(`${name}: the page was loaded over ${protocol}, not h2`);
  return { page, name, room };
}

async function waitState(client, state) {
  try {
    await client.page.waitForSelector(`#state[data-state="${state}"]`, { timeout: WAIT_MS });
  } catch {
    const shown = await client.page.textContent("#state");
    fail(`${client.name}: not "${state}" within ${WAIT_MS} ms (shows "${shown}")`);
  }
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
    fail(`${client.name} did not receive "${line}" within ${WAIT_MS} ms`);
  }
}

/** Waits until the server's log has `count` lines matching `pattern`; returns them. */
async function waitLog(pattern, count, what) {
  const deadline = Date.now() + WAIT_MS;
  for (;;) {
    const lines = server.log.split("\n").filter((l) => pattern.test(l));
    if (lines.length >= count) return lines;
    if (Date.now() > deadline) {
      fail(`the server logged ${lines.length} ${what}, expected ${count}; its log:\n${server.log}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function main() {
  scratch = mkdtempSync(join(tmpdir(), "sockeye-h2-"));
  const tls = makeCertificate(scratch);
  server = await startServer(tls);
  const port = server.port;
  console.log(`browser: sockeye serve --http2 on https://127.0.0.1:${port}/`);
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    timeout: WAIT_MS * 2,
    // playwright-core gives every launch a fresh temporary profile.
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
      "--ignore-certificate-errors",
    ],
  });
  console.log(`browser: Chromium ${browser.version()}`);
  const context = await browser.newContext({ ignoreHTTPSErrors: true });
  const a1 = await openPage(context, port, "A1", "alpha");
  const a2 = await openPage(context, port, "A2", "alpha");
  for (const client of [a1, a2]) await waitState(client, "open");
  console.log("browser: two pages loaded over h2 and connected");
  const hello = "hello over http/2";
  const reply = "reply over http/2";
  await say(a1, hello);
  await waitMessage(a2, "A1", hello);
  await say(a2, reply);
  await waitMessage(a1, "A2", reply);
  console.log("browser: A1 <-> A2 delivered");

  // The server's record: both WebSockets of room alpha were opened over HTTP/2.
  const opened = await waitLog(/connection open.*path=\/room\/alpha /, 2, "websocket openings for /room/alpha");
  const notH2 = opened.filter((l) => !/http=HTTP\/2\.0/.test(l));
  if (notH2.length > 0) fail(`websockets opened without HTTP/2:\n${notH2.join("\n")}`);
  const pages = await waitLog(/http request.*path=\/(\?\S*)? .*status=200/, 2, "page requests");
  if (!pages.every((l) => /http=HTTP\/2\.0/.test(l))) fail(`page not served over HTTP/2:\n${pages.join("\n")}`);
  const peers = new Set(opened.map((l) => l.match(/peer=(\S+)/)?.[1]));
  console.log(`browser: server log: ${opened.length} websocket openings over HTTP/2, ` +
    `from ${peers.size} TCP connection(s):`);
  for (const line of opened) console.log(`browser:   ${line.trim()}`);

  const echoed = await checkCloseEcho(a1.page, `wss://127.0.0.1:${port}/room/close-check`, WAIT_MS);
  const [closeCheck] = await waitLog(/connection open.*path=\/room\/close-check /, 1, "openings for /room/close-check");
  if (!/http=HTTP\/2\.0/.test(closeCheck)) fail(`the close check's WebSocket was not over HTTP/2: ${closeCheck}`);
  console.log(`browser: closed over HTTP/2 with ${echoed.code} ${JSON.stringify(echoed.reason)}: echoed back`);
}

const watchdog = setTimeout(() => {
  console.error(`browser: FAILED: the run took longer than ${TOTAL_MS} ms`);
  if (server) server.child.kill("SIGKILL");
  process.exit(1);
}, TOTAL_MS);

let status = 0;
try {
  await main();
  console.log("browser: h2 OK");
} catch (e) {
  console.error(`browser: FAILED: ${e.message}`);
  status = 1;
} finally {
  if (browser) await browser.close().catch(() => {});
  if (server) await stopServer();
  if (scratch) rmSync(scratch, { recursive: true, force: true });
  clearTimeout(watchdog);
}
process.exit(status);
