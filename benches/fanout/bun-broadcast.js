// Bun's broadcast server for scripts/bench-fanout.sh: one topic per path; every message a client
// sends goes to every other subscriber of its path (`ws.publish` skips the sender), as Bun's
// documentation shows pub/sub (`ws.subscribe` in `open`, `ws.publish` in `message`). Defaults
// otherwise (no compression, Bun's backpressure and payload limits).
//
//   bun benches/fanout/bun-broadcast.js [PORT]     (0 or none: a free port)
//
// Prints `listening on 127.0.0.1:PORT` and serves until killed.
const port = Number(process.argv[2] ?? 0);

const server = Bun.serve({
  hostname: "127.0.0.1",
  port,
  fetch(req, server) {
    const topic = new URL(req.url).pathname;
    if (server.upgrade(req, { data: { topic } })) {
      return undefined;
    }
    return new Response("WebSocket only\n", { status: 426 });
  },
  websocket: {
    open(ws) {
      ws.subscribe(ws.data.topic);
    },
    message(ws, message) {
      ws.publish(ws.data.topic, message);
    },
  },
});

console.log(`listening on 127.0.0.1:${server.port}`);
