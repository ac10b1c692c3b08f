#!/usr/bin/env node
// Node `ws` peer for sockeye's interoperability tests (scripts/interop.sh).
//
//   node peer.mjs serve [DEFLATE FLAGS] [--tls-cert FILE --tls-key FILE]
//       Echo server on 127.0.0.1, a free port; prints
//       "node-ws: listening on ws://127.0.0.1:PORT/" and echoes every message. With --tls-cert
//       and --tls-key (PEM chain, leaf first, and its key) it serves TLS through an
//       https.Server and prints a wss:// URL.
//   node peer.mjs client URL [DEFLATE FLAGS] [--expect-extensions STRING|none] [--ca FILE]
//       Sends the interop message set (interop/README.md), checks every echo, a ping/pong and
//       a clean close with 4321 and a UTF-8 reason, both echoed by the server. --expect-extensions compares the server's Sec-WebSocket-Extensions
//       response header exactly ("none": no header); ws's own `ws.extensions` only lists
//       extension names, so the client also checks that it is "permessage-deflate" or "".
//       --ca trusts the PEM certificates in FILE (instead of Node's bundled roots) for a
//       wss:// URL, and the client checks that the connection is encrypted.
//
// DEFLATE FLAGS are sockeye's: --deflate, --deflate-server-no-context-takeover,
// --deflate-client-no-context-takeover, --deflate-server-max-window-bits N,
// --deflate-client-max-window-bits N; they become ws's `perMessageDeflate` options, with
// threshold 0 so that every message is compressed, except every other message of the burst,
// which the client sends with `compress: false`. Without --deflate compression is off.
//
// Exits 0 on success, 1 on a mismatch or error, 2 for bad arguments.

import { readFileSync } from 'node:fs';
import { createServer } from 'node:https';
import { WebSocket, WebSocketServer } from 'ws';

const MAX_PAYLOAD = 16 * 1024 * 1024;
const REPLY_TIMEOUT_MS = 20_000;
const BURST = 50;
const PING_PAYLOAD = Buffer.from('interop-ping');
const MID_PING_PAYLOAD = Buffer.from('interop-ping between fragments');
// The server must echo both (sockeye, ws and websockets do).
const CLOSE_CODE = 4321;
const CLOSE_REASON = 'ciao ✓ — 再见 👋';
const UTF8_LINE = 'héllo wörld — κόσμε — 日本語のテキスト — emoji 🦀🐍🟩 — ';

/** Marsaglia's xorshift32 (13, 17, 5), each state little-endian (as in interop_client.rs). */
function xorshiftBytes(seed, length) {
  const out = Buffer.alloc(Math.ceil(length / 4) * 4);
  let state = seed >>> 0;
  for (let offset = 0; offset < out.length; offset += 4) {
    state ^= state << 13;
    state >>>= 0;
    state ^= state >>> 17;
    state ^= state << 5;
    state >>>= 0;
    out.writeUInt32LE(state, offset);
  }
  return out.subarray(0, length);
}

/** JSON-like, repetitive ASCII text of exactly `length` bytes. */
function jsonText(length) {
  let text = '[';
  for (let seq = 0; text.length < length; seq++) {
    text += JSON.stringify({ seq, kind: 'update', value: 'lorem ipsum dolor' }) + ',';
  }
  return text.slice(0, length);
}

/** Splits `buffer` at byte offsets (which may fall inside a UTF-8 character). */
function splitAt(buffer, offsets) {
  const parts = [];
  let start = 0;
  for (const end of [...offsets, buffer.length]) {
    parts.push(buffer.subarray(start, end));
    start = end;
  }
  return parts;
}

/** [name, binary?, payload Buffer, byte offsets of fragment boundaries] in sending order. */
function cases() {
  const fragmentedText = Buffer.from('fragmented κόσμε 日本語 🦀 end');
  const alphabet = Array.from({ length: 125 }, (_, i) => String.fromCharCode(97 + (i % 26)));
  return [
    ['empty text', false, Buffer.alloc(0), []],
    ['empty binary', true, Buffer.alloc(0), []],
    ['1-byte text', false, Buffer.from('x'), []],
    ['1-byte binary', true, Buffer.from([0x2a]), []],
    ['125-byte text', false, Buffer.from(alphabet.join('')), []],
    ['126-byte binary', true, Buffer.from(Array.from({ length: 126 }, (_, i) => i)), []],
    ['1000-byte JSON-like text', false, Buffer.from(jsonText(1000)), []],
    [
      '65536-byte binary',
      true,
      Buffer.from(Array.from({ length: 65536 }, (_, i) => (i * 7 + (i >> 8)) & 0xff)),
      [],
    ],
    ['65536-byte JSON-like text', false, Buffer.from(jsonText(65536)), []],
    ['1 MiB xorshift binary', true, xorshiftBytes(0x2545f491, 1 << 20), []],
    // Offsets 12 and 20 fall inside "κ" and "ε".
    ['fragmented text', false, fragmentedText, [12, 20]],
    ['fragmented binary', true, xorshiftBytes(7, 3000), [1000, 1000]],
    ['multi-byte UTF-8 text', false, Buffer.from(UTF8_LINE.repeat(20)), []],
  ];
}

const burstMessage = (i) => `burst ${i}: {"seq":${i},"kind":"burst"}`;

function parseArgs(argv) {
  const usage =
    'usage: peer.mjs serve|client [URL] [--deflate] [--deflate-server-no-context-takeover] ' +
    '[--deflate-client-no-context-takeover] [--deflate-server-max-window-bits N] ' +
    '[--deflate-client-max-window-bits N] [--expect-extensions STRING|none] [--ca FILE] ' +
    '[--tls-cert FILE --tls-key FILE]';
  const fail = (message) => {
    console.error(`node-ws: ${message}\n${usage}`);
    process.exit(2);
  };
  const bits = (flag, value) => {
    const n = Number(value);
    if (!Number.isInteger(n) || n < 8 || n > 15) fail(`${flag} needs a number from 8 to 15`);
    return n;
  };
  const [mode, ...rest] = argv;
  if (mode !== 'serve' && mode !== 'client') fail('the mode is serve or client');
  const args = {
    mode,
    url: undefined,
    deflate: false,
    params: {},
    expectExtensions: undefined,
    ca: undefined,
    tlsCert: undefined,
    tlsKey: undefined,
  };
  const file = (flag, value) => {
    if (value === undefined) fail(`${flag} needs a file`);
    return value;
  };
  for (let i = 0; i < rest.length; i++) {
    const arg = rest[i];
    switch (arg) {
      case '--deflate':
        args.deflate = true;
        break;
      case '--deflate-server-no-context-takeover':
        args.params.serverNoContextTakeover = true;
        break;
      case '--deflate-client-no-context-takeover':
        args.params.clientNoContextTakeover = true;
        break;
      case '--deflate-server-max-window-bits':
        args.params.serverMaxWindowBits = bits(arg, rest[++i]);
        break;
      case '--deflate-client-max-window-bits':
        args.params.clientMaxWindowBits = bits(arg, rest[++i]);
        break;
      case '--expect-extensions':
        if (rest[i + 1] === undefined) fail('--expect-extensions needs a value');
        args.expectExtensions = rest[++i];
        break;
      case '--ca':
        args.ca = file(arg, rest[++i]);
        break;
      case '--tls-cert':
        args.tlsCert = file(arg, rest[++i]);
        break;
      case '--tls-key':
        args.tlsKey = file(arg, rest[++i]);
        break;
      default:
        if (arg.startsWith('-')) fail(`unknown option ${arg}`);
        if (args.url !== undefined) fail(`unexpected argument ${arg}`);
        args.url = arg;
    }
  }
  if (Object.keys(args.params).length > 0 && !args.deflate) {
    fail('the --deflate-* parameters need --deflate');
  }
  if ((mode === 'client') !== (args.url !== undefined)) {
    fail('client mode takes a URL, serve mode does not');
  }
  if ((args.tlsCert === undefined) !== (args.tlsKey === undefined)) {
    fail('--tls-cert and --tls-key go together');
  }
  if (args.tlsCert !== undefined && mode !== 'serve') fail('--tls-cert is for serve mode');
  if (args.ca !== undefined && mode !== 'client') fail('--ca is for client mode');
  return args;
}

/** ws's perMessageDeflate option: false, or the parameters with threshold 0. */
function perMessageDeflate(args) {
  return args.deflate ? { ...args.params, threshold: 0 } : false;
}

function serve(args) {
  const options = { perMessageDeflate: perMessageDeflate(args), maxPayload: MAX_PAYLOAD };
  let wss;
  if (args.tlsCert === undefined) {
    wss = new WebSocketServer({ host: '127.0.0.1', port: 0, ...options });
    wss.on('listening', () => {
      console.log(`node-ws: listening on ws://127.0.0.1:${wss.address().port}/`);
    });
  } else {
    const https = createServer({ cert: readFileSync(args.tlsCert), key: readFileSync(args.tlsKey) });
    https.on('tlsClientError', (err) => console.log(`node-ws: tls error: ${err.message}`));
    wss = new WebSocketServer({ server: https, ...options });
    https.listen(0, '127.0.0.1', () => {
      console.log(`node-ws: listening on wss://127.0.0.1:${https.address().port}/`);
    });
  }
  // ws answers a handshake it refuses itself; with this listener it is logged first (the
  // reason is only in the response body otherwise), then answered as ws would.
  wss.on('wsClientError', (err, socket, request) => {
    const offer = request.headers['sec-websocket-extensions'];
    console.log(`node-ws: handshake refused: ${err.message} (offer ${JSON.stringify(offer)})`);
    socket.once('finish', socket.destroy);
    socket.end(
      'HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Type: text/plain\r\n' +
        `Content-Length: ${Buffer.byteLength(err.message)}\r\n\r\n${err.message}`,
    );
  });
  wss.on('connection', (ws, request) => {
    const offer = request.headers['sec-websocket-extensions'];
    console.log(`node-ws: connection, offer ${JSON.stringify(offer)}, extensions ${ws.extensions}`);
    ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary }));
    ws.on('error', (err) => console.error(`node-ws: connection error: ${err.message}`));
  });
  const stop = () => wss.close(() => process.exit(0));
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

class Mismatch extends Error {}

/** Queues a client's incoming messages and pongs so they can be awaited in order. */
class Inbox {
  constructor(ws) {
    this.items = [];
    this.waiters = [];
    this.ended = null;
    ws.on('message', (data, isBinary) => this.push({ type: isBinary ? 'binary' : 'text', data }));
    ws.on('pong', (data) => this.push({ type: 'pong', data }));
    ws.on('close', (code, reason) => {
      this.ended = `the connection closed (${code} ${reason})`;
      this.push(null);
    });
  }

  push(item) {
    if (item !== null) this.items.push(item);
    for (const wake of this.waiters.splice(0)) wake();
  }

  async next(what) {
    const deadline = Date.now() + REPLY_TIMEOUT_MS;
    while (this.items.length === 0) {
      if (this.ended) throw new Mismatch(`${what}: ${this.ended}`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Mismatch(`${what}: no reply within ${REPLY_TIMEOUT_MS} ms`);
      await new Promise((resolve) => {
        const timer = setTimeout(resolve, left);
        this.waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
    return this.items.shift();
  }
}

function checkEcho(name, binary, sent, got) {
  const expectedType = binary ? 'binary' : 'text';
  if (got.type !== expectedType) {
    throw new Mismatch(`${name}: sent ${expectedType}, echo is ${got.type}`);
  }
  if (!sent.equals(got.data)) {
    let first = 0;
    while (first < sent.length && first < got.data.length && sent[first] === got.data[first]) {
      first++;
    }
    throw new Mismatch(
      `${name}: echo differs: sent ${sent.length}, got ${got.data.length}, first difference at ${first}`,
    );
  }
}

/** Waits for the pong that answers a ping with `payload`; anything else first is a failure. */
async function expectPong(inbox, payload, name) {
  const pong = await inbox.next(`${name}: pong`);
  if (pong.type !== 'pong' || !pong.data.equals(payload)) {
    throw new Mismatch(`${name}: expected the pong to our ping, got ${pong.type} ${pong.data}`);
  }
}

/** Resolves once `data` is handed to the socket; rejects on a send error. */
function send(ws, data, options) {
  return new Promise((resolve, reject) => {
    ws.send(data, options, (err) => (err ? reject(err) : resolve()));
  });
}

async function client(args) {
  const ws = new WebSocket(args.url, {
    perMessageDeflate: perMessageDeflate(args),
    maxPayload: MAX_PAYLOAD,
    handshakeTimeout: 10_000,
    ...(args.ca === undefined ? {} : { ca: readFileSync(args.ca) }),
  });
  let header;
  ws.on('upgrade', (response) => {
    header = response.headers['sec-websocket-extensions'];
  });
  const inbox = new Inbox(ws);
  await new Promise((resolve, reject) => {
    ws.once('open', resolve);
    ws.once('error', reject);
  });
  ws.on('error', (err) => console.error(`node-ws client: error: ${err.message}`));
  if (args.ca !== undefined) {
    // ws keeps its socket private; a TLSSocket is what makes the connection encrypted.
    const socket = ws._socket;
    if (!socket || socket.encrypted !== true) {
      throw new Mismatch('--ca given, but the connection is not encrypted');
    }
    console.log(`node-ws client: ${socket.getProtocol()}`);
  }

  if (args.expectExtensions !== undefined) {
    const expected = args.expectExtensions === 'none' ? undefined : args.expectExtensions;
    if (header !== expected) {
      throw new Mismatch(
        `Sec-WebSocket-Extensions ${JSON.stringify(header)}, expected ${JSON.stringify(expected)}`,
      );
    }
    const names = expected === undefined ? '' : 'permessage-deflate';
    if (ws.extensions !== names) {
      throw new Mismatch(`ws.extensions ${JSON.stringify(ws.extensions)}, expected ${names}`);
    }
  }
  console.log(`node-ws client: connected, extensions ${JSON.stringify(header)}`);

  for (const [name, binary, payload, splits] of cases()) {
    if (splits.length === 0) {
      await send(ws, payload, { binary });
    } else {
      // A ping goes between the first two fragments: the peer must answer it while it
      // reassembles (and inflates) the message.
      const parts = splitAt(payload, splits);
      for (const [index, part] of parts.entries()) {
        await send(ws, part, { binary, fin: index === parts.length - 1 });
        if (index === 0) ws.ping(MID_PING_PAYLOAD);
      }
      await expectPong(inbox, MID_PING_PAYLOAD, name);
    }
    checkEcho(name, binary, payload, await inbox.next(name));
  }

  // Every other burst message goes uncompressed (RSV1 clear), which RFC 7692 allows per
  // message on a compressed connection: the peer must take both kinds in one context.
  for (let i = 0; i < BURST; i++) ws.send(burstMessage(i), { compress: i % 2 === 0 });
  for (let i = 0; i < BURST; i++) {
    const name = `burst message ${i}`;
    checkEcho(name, false, Buffer.from(burstMessage(i)), await inbox.next(name));
  }

  ws.ping(PING_PAYLOAD);
  await expectPong(inbox, PING_PAYLOAD, 'ping');

  const closed = new Promise((resolve) =>
    ws.once('close', (code, reason) => resolve([code, reason.toString('utf8')])),
  );
  ws.close(CLOSE_CODE, CLOSE_REASON);
  const [code, reason] = await Promise.race([
    closed,
    new Promise((resolve) => setTimeout(() => resolve(['timeout', '']), REPLY_TIMEOUT_MS)),
  ]);
  // ws reports the code and reason of the peer's close frame, or 1006 when none arrived.
  if (code !== CLOSE_CODE || reason !== CLOSE_REASON) {
    throw new Mismatch(
      `close: expected the echo ${CLOSE_CODE} ${JSON.stringify(CLOSE_REASON)}, ` +
        `got ${code} ${JSON.stringify(reason)}`,
    );
  }
  console.log(
    `node-ws client: ok (${cases().length} messages, ${BURST} burst messages, ping, clean close)`,
  );
}

const args = parseArgs(process.argv.slice(2));
if (args.mode === 'serve') {
  serve(args);
} else {
  client(args).then(
    () => process.exit(0),
    (err) => {
      console.error(`node-ws client: FAILED: ${err instanceof Mismatch ? '' : `${err.name}: `}${err.message}`);
      process.exit(1);
    },
  );
}
