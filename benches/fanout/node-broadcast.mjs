// A Node `ws` broadcast server for scripts/bench-fanout.sh: one room per path; every message a
// client sends goes to every other open client of its room, the loop of ws's README
// ("Server broadcast") over the room instead of `wss.clients`. No compression.
//
//   node benches/fanout/node-broadcast.mjs [PORT]     (0 or none: a free port)
//
// Prints `listening on 127.0.0.1:PORT` and serves until killed.
import { WebSocket, WebSocketServer } from "ws";

const port = Number(process.argv[2] ?? 0);
const rooms = new Map();
const wss = new WebSocketServer({ host: "127.0.0.1", port, perMessageDeflate: false });

wss.on("connection", (ws, request) => {
  const path = new URL(request.url, "http://localhost").pathname;
  let room = rooms.get(path);
  if (room === undefined) {
    room = new Set();
    rooms.set(path, room);
  }
  room.add(ws);
  ws.on("message", (data, isBinary) => {
    for (const other of room) {
      if (other !== ws && other.readyState === WebSocket.OPEN) {
        other.send(data, { binary: isBinary });
      }
    }
  });
  ws.on("close", () => {
    room.delete(ws);
    if (room.size === 0 && rooms.get(path) === room) {
      rooms.delete(path);
    }
  });
  ws.on("error", () => {});
});

wss.on("listening", () => {
  console.log(`listening on 127.0.0.1:${wss.address().port}`);
});
