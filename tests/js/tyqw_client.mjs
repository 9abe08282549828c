// The original TypeScript Tyqw class's use of @microsoft/fetch-event-source, under node:
// POST with `Authorization: Bearer <site token>`, `session_id` in the body, events
// through onmessage (where an in-band `event:error` frame arrives) and failures through
// onerror (which rethrows, so a failed turn is never retried).
//
//   node tyqw_client.mjs '{"base": "http://127.0.0.1:8000", "app_id": "...",
//                          "token": "...", "steps": [{"send": "hi"}, {"clear": true}]}'
//
// prints one JSON line per callback and per finished step.
//
// fetch-event-source is written for browsers: it reads `document.hidden` (to pause in a
// hidden tab) and calls `window.fetch` / `window.setTimeout`. Node 20 has fetch and
// timers, so `window` is globalThis and `document` a tab that is never hidden.
import { EventEmitter } from "node:events";
import { createRequire } from "node:module";

globalThis.window = globalThis;
globalThis.document = { hidden: false, addEventListener() {}, removeEventListener() {} };
const require = createRequire(import.meta.url);
const { fetchEventSource } = require("@microsoft/fetch-event-source");

class RelayError extends Error {
  constructor(where, status, detail) {
    super(detail.message || `HTTP ${status}`);
    this.where = where;
    this.status = status;
    this.detail = detail;
  }
}

class Tyqw extends EventEmitter {
  constructor(base, appId, token) {
    super();
    this.url = `${base}/api/v1/apps/${appId}/completion`;
    this.token = token;
    this.sessionId = null;
    this.controller = null;
  }

  setSessionId(id) {
    this.sessionId = id;
  }

  clearSessionId() {
    this.sessionId = null;
  }

  send(prompt) {
    this.controller = new AbortController();
    const input = { prompt };
    if (this.sessionId) input.session_id = this.sessionId;
    return fetchEventSource(this.url, {
      method: "POST",
      headers: { "Content-Type": "application/json", Authorization: `Bearer ${this.token}` },
      body: JSON.stringify({ input, parameters: { incremental_output: true }, debug: {} }),
      signal: this.controller.signal,
      openWhenHidden: true,
      onopen: async (response) => {
        const type = response.headers.get("content-type") || "";
        if (response.ok && type.startsWith("text/event-stream")) return;
        throw new RelayError("onopen", response.status, await response.json().catch(() => ({})));
      },
      onmessage: (event) => {
        const data = JSON.parse(event.data);
        if (event.event === "error") throw new RelayError("onmessage", null, data);
        if (data.output && data.output.session_id) this.sessionId = data.output.session_id;
        this.emit("message", { id: event.id, data });
      },
      onerror: (error) => {
        this.emit("error", error);
        throw error;
      },
    });
  }
}

const scenario = JSON.parse(process.argv[2]);
const client = new Tyqw(scenario.base, scenario.app_id, scenario.token);
const print = (line) => process.stdout.write(JSON.stringify(line) + "\n");
let step = 0;
client.on("message", ({ id, data }) => {
  const output = data.output || {};
  print({ step, type: "message", id, text: output.text, session_id: output.session_id,
          finish_reason: output.finish_reason });
});
client.on("error", (error) => {
  print({ step, type: "error", where: error.where || "network", status: error.status,
          code: error.detail && error.detail.code, message: error.message,
          request_id: error.detail && error.detail.request_id });
});
for (const action of scenario.steps) {
  if (action.clear) client.clearSessionId();
  if (action.set) client.setSessionId(action.set);
  if (action.send !== undefined) {
    const sent = client.sessionId;
    let failed = false;
    try {
      await client.send(action.send);
    } catch (error) {
      failed = true;
    }
    print({ step, type: "done", sent_session_id: sent, session_id: client.sessionId, failed });
  }
  step += 1;
}
