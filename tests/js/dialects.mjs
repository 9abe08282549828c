// The relay's chat dialects read by the clients front ends use, under node:
// the `openai` package against /v1, and the `ai` package's DefaultChatTransport and
// readUIMessageStream against /api/chat.
//
//   node dialects.mjs '{"base": "http://127.0.0.1:8000", "token": "...", "model": "...",
//                       "kind": "openai" | "ui", "prompts": ["my name is Ada", "..."]}'
//
// Each prompt is one turn of one chat, sent with the whole history as the client keeps
// it; one JSON line is printed per turn (or one {"error": ...} line when a turn fails).
import OpenAI from "openai";
import { DefaultChatTransport, readUIMessageStream } from "ai";

const scenario = JSON.parse(process.argv[2]);
const print = (value) => process.stdout.write(JSON.stringify(value) + "\n");

async function openaiTurns() {
  const client = new OpenAI({
    baseURL: `${scenario.base}/v1`,
    apiKey: scenario.token,
    maxRetries: 0,
  });
  const models = await client.models.list();
  print({ models: models.data.map((model) => model.id) });
  const messages = [];
  for (const prompt of scenario.prompts) {
    messages.push({ role: "user", content: prompt });
    try {
      const stream = await client.chat.completions.create({
        model: scenario.model,
        messages,
        stream: true,
        stream_options: { include_usage: true },
      });
      let text = "";
      let role = null;
      let usage = null;
      let finish = null;
      for await (const chunk of stream) {
        if (chunk.usage) usage = chunk.usage;
        const choice = chunk.choices[0];
        if (!choice) continue;
        role = role ?? choice.delta.role ?? null;
        text += choice.delta.content ?? "";
        finish = choice.finish_reason ?? finish;
      }
      messages.push({ role: "assistant", content: text });
      print({ text, role, usage, finish });
    } catch (error) {
      print({ error: error.constructor.name, status: error.status ?? null, message: error.message });
      return;
    }
  }
}

async function uiTurns() {
  const transport = new DefaultChatTransport({
    api: `${scenario.base}/api/chat`,
    headers: { Authorization: `Bearer ${scenario.token}` },
  });
  const messages = [];
  let n = 0;
  for (const prompt of scenario.prompts) {
    messages.push({ id: `u${n++}`, role: "user", parts: [{ type: "text", text: prompt }] });
    try {
      const stream = await transport.sendMessages({
        trigger: "submit-message",
        chatId: "chat-js",
        messageId: undefined,
        messages,
        abortSignal: undefined,
      });
      const errors = [];
      let last = null;
      for await (const message of readUIMessageStream({
        stream,
        onError: (error) => errors.push(error.message),
      })) {
        last = message;
      }
      messages.push(last);
      print({ id: last.id, role: last.role, parts: last.parts, metadata: last.metadata, errors });
    } catch (error) {
      print({ error: error.constructor.name, message: error.message });
      return;
    }
  }
}

await (scenario.kind === "openai" ? openaiTurns() : uiTurns());
