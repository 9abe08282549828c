// The browser article's code for a Qwen model, under node: @microsoft/fetch-event-source
// POSTs the text-generation body with `Authorization: Bearer <key or relay token>` and
// `X-DashScope-SSE: enable`, and reads each event's output (message content, or text).
//
//   node model_client.mjs '{"url": ".../api/v1/services/aigc/text-generation/generation",
//                           "token": "...", "messages": [{"role": "user", "content": "hi"}]}'
//
// prints one JSON line per event ({"event", "piece"}) and one at the end ({"done"} or
// {"error"}).
import { createRequire } from "node:module";

globalThis.window = globalThis;
globalThis.document = { hidden: false, addEventListener() {}, removeEventListener() {} };
const require = createRequire(import.meta.url);
const { fetchEventSource } = require("@microsoft/fetch-event-source");

const { url, token, messages, model = "qwen-turbo" } = JSON.parse(process.argv[2]);
const print = (line) => process.stdout.write(JSON.stringify(line) + "\n");

try {
  await fetchEventSource(url, {
    method: "POST",
    headers: {
      Authorization: `Bearer ${token}`,
      "Content-Type": "application/json",
      "X-DashScope-SSE": "enable",
    },
    body: JSON.stringify({ model, input: { messages }, parameters: { incremental_output: true } }),
    openWhenHidden: true,
    onopen: async (response) => {
      if (!response.ok) throw new Error(`HTTP ${response.status}: ${await response.text()}`);
    },
    onmessage: (event) => {
      const data = JSON.parse(event.data);
      if (event.event === "error") throw new Error(data.message);
      const output = data.output;
      const piece = output.choices ? output.choices[0].message.content : output.text;
      print({ event: event.event, piece });
    },
    onerror: (error) => {
      throw error; // never retried
    },
  });
  print({ done: true });
} catch (error) {
  print({ error: String(error.message || error) });
}
