// Shared by demo.test.mjs and h2.test.mjs: a WebSocket opened by a page closes with a code and
// a multi-byte UTF-8 reason, and Chromium's close event must report both back: sockeye's close
// frame in answer echoes the code and the reason (as Node's `ws` and Python's `websockets` do).

/** The code and reason the page closes with. */
export const CLOSE_CODE = 4321;
export const CLOSE_REASON = "ciao ✓ — 再见 👋";

/**
 * Opens `url` from `page`, closes with CLOSE_CODE and CLOSE_REASON once open, and resolves with
 * the close event's code, reason and wasClean; throws when they differ or when nothing arrives
 * within `waitMs`.
 */
export async function checkCloseEcho(page, url, waitMs) {
  const got = await page.evaluate(
    ([url, code, reason, waitMs]) =>
      new Promise((resolve) => {
        const ws = new WebSocket(url);
        const timer = setTimeout(
          () => resolve({ error: `no close event within ${waitMs} ms` }),
          waitMs,
        );
        ws.onopen = () => ws.close(code, reason);
        ws.onclose = (event) => {
          clearTimeout(timer);
          resolve({ code: event.code, reason: event.reason, wasClean: event.wasClean });
        };
      }),
    [url, CLOSE_CODE, CLOSE_REASON, waitMs],
  );
  if (got.error || got.code !== CLOSE_CODE || got.reason !== CLOSE_REASON || !got.wasClean) {
    throw new Error(
      `closing ${url} with ${CLOSE_CODE} ${JSON.stringify(CLOSE_REASON)}: the close event ` +
        `reported ${JSON.stringify(got)}, expected the same code and reason, clean`,
    );
  }
  return got;
}
