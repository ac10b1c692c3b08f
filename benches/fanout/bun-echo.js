// Bun's echo server for scripts/bench.sh: `Bun.serve` with a `websocket` handler that sends every
// text and binary message back. Messages up to 64 MiB (like every other server of the echo
// matrix, for its 16 MiB scenario); no compression (Bun's default).
//
//   bun benches/fanout/bun-echo.js [PORT]     (0 or none: a free port)
//
// Prints `listening on 127.0.0.1:PORT` and serves until killed.
const port = Number(process.argv[2] ?? 0);

const server = Bun.serve({
  hostname: "127.0.0.1",
  port,
  fetch(req, server) {
    if (server.upgrade(req)) {
      return undefined;
    }
    return new Response("WebSocket only\n", { status: 426 });
  },
  websocket: {
    maxPayloadLength: 64 * 1024 * 1024,
    message(ws, message) {
      ws.send(message);
    },
  },
});

console.log(`listening on 127.0.0.1:${server.port}`);
