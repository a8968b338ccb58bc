// Drives the Vercel AI SDK's own client code against a running Trickle; prints one JSON result.
//
//   node aisdk_chat.mjs chat   <api-url> '["first prompt", "second prompt"]'
//     A `Chat` (the engine behind `useChat`, here with a plain state instead of React's)
//     with `DefaultChatTransport({ api })` sends each prompt in turn, as a page would.
//   node aisdk_chat.mjs stop   <api-url> '"prompt"'
//     The same `Chat`, stopped (its `stop()`, useChat's stop button) once some text has arrived.
//   node aisdk_chat.mjs stream <api-url> '"prompt"'
//     `DefaultChatTransport.sendMessages` alone: the parsed, schema-validated chunks, and
//     the message `readUIMessageStream` builds from them.
//
// AI_PACKAGE names the package to drive ("ai", the default, is 6; "ai5" is 5, an npm alias), and
// AI_TRANSPORT=text makes the chats use `TextStreamChatTransport` instead of the default one.
const { AbstractChat, DefaultChatTransport, TextStreamChatTransport, readUIMessageStream } = await import(
  process.env.AI_PACKAGE || 'ai'
);
const Transport = process.env.AI_TRANSPORT === 'text' ? TextStreamChatTransport : DefaultChatTransport;

class PlainChatState {
  constructor() {
    this.status = 'ready';
    this.error = undefined;
    this.messages = [];
  }
  pushMessage(message) {
    this.messages = this.messages.concat(message);
  }
  popMessage() {
    this.messages = this.messages.slice(0, -1);
  }
  replaceMessage(index, message) {
    this.messages = [...this.messages.slice(0, index), message, ...this.messages.slice(index + 1)];
  }
  snapshot(thing) {
    return structuredClone(thing);
  }
}

class Chat extends AbstractChat {
  constructor(init) {
    super({ ...init, state: new PlainChatState() });
  }
}

const textOf = message =>
  message.parts.filter(part => part.type === 'text').map(part => part.text).join('');

async function chat(api, prompts) {
  const errors = [];
  const finished = [];
  const chat = new Chat({
    transport: new Transport({ api }),
    onError: error => errors.push(String(error?.message ?? error)),
    onFinish: ({ message }) => finished.push(message.id),
  });
  const turns = [];
  for (const prompt of prompts) {
    await chat.sendMessage({ text: prompt });
    turns.push({ status: chat.status, error: chat.error ? String(chat.error.message) : null });
  }
  return {
    turns,
    errors,
    finished,
    messages: chat.messages.map(m => ({ id: m.id, role: m.role, text: textOf(m), parts: m.parts })),
  };
}

async function stop(api, prompt) {
  const chat = new Chat({ transport: new Transport({ api }) });
  const sent = chat.sendMessage({ text: prompt });
  const answer = () => (chat.messages.length > 1 ? textOf(chat.messages[chat.messages.length - 1]) : '');
  for (let i = 0; i < 3000 && !answer(); i++) await new Promise(resolve => setTimeout(resolve, 10));
  const seen = answer();
  await chat.stop();
  await sent;
  return { seen, status: chat.status, text: answer() };
}

async function stream(api, prompt) {
  const transport = new DefaultChatTransport({ api });
  const chunks = await transport.sendMessages({
    chatId: 'chat-1',
    messages: [{ id: 'user-1', role: 'user', parts: [{ type: 'text', text: prompt }] }],
    trigger: 'submit-message',
    messageId: undefined,
    abortSignal: undefined,
  });
  const seen = [];
  const recorded = chunks.pipeThrough(
    new TransformStream({
      transform(chunk, controller) {
        seen.push(chunk);
        controller.enqueue(chunk);
      },
    }),
  );
  const errors = [];
  let last;
  for await (const message of readUIMessageStream({ stream: recorded, onError: e => errors.push(String(e)) })) {
    last = message;
  }
  return { chunks: seen, errors, message: last ? { id: last.id, text: textOf(last), parts: last.parts } : null };
}

const [mode, api, arg] = process.argv.slice(2);
const run = { chat, stop, stream }[mode];
if (!run || !api || arg === undefined) {
  console.error('usage: node aisdk_chat.mjs chat|stop|stream <api-url> <json>');
  process.exit(2);
}
const result = await run(api, JSON.parse(arg));
process.stdout.write(JSON.stringify(result) + '\n');
