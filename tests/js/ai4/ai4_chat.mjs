// Drives AI SDK 4's own chat client against a running Trickle; prints one JSON result.
//
//   node ai4_chat.mjs chat <api-url> '{"prompts": ["first", "second"], "streamProtocol": "data"}'
//     Each prompt sent in turn as `useChat`'s `append` sends it (@ai-sdk/react 1.2, the `ai` 4.3
//     pinned here): the user message gets an id, a date and its `parts`, the body is
//     `{id, messages: [{role, content, parts}]}`, and `callChatApi` (@ai-sdk/ui-utils) reads the
//     answer in the given stream protocol ("data", the default, or "text").
//   node ai4_chat.mjs stop <api-url> '{"prompt": "…", "streamProtocol": "data"}'
//     The same, aborted (useChat's `stop()`) once some text has arrived.
import { callChatApi, fillMessageParts, generateId, getMessageParts } from '@ai-sdk/ui-utils';

// What useChat's triggerRequest posts (sendExtraMessageFields off, its default).
const payload = messages =>
  messages.map(({ role, content, experimental_attachments, data, annotations, toolInvocations, parts }) => ({
    role,
    content,
    ...(experimental_attachments !== undefined && { experimental_attachments }),
    ...(data !== undefined && { data }),
    ...(annotations !== undefined && { annotations }),
    ...(toolInvocations !== undefined && { toolInvocations }),
    ...(parts !== undefined && { parts }),
  }));

function send(api, chatId, state, prompt, streamProtocol, abortController) {
  const user = { role: 'user', content: prompt, id: generateId(), createdAt: new Date() };
  const chatMessages = fillMessageParts(state.messages.concat({ ...user, parts: getMessageParts(user) }));
  state.messages = chatMessages;
  const turn = { status: 'submitted', error: null, updates: 0, finish: null };
  return callChatApi({
    api,
    body: { id: chatId, messages: payload(chatMessages), data: undefined },
    streamProtocol,
    credentials: undefined,
    headers: {},
    abortController: () => abortController,
    restoreMessagesOnFailure() {},
    onResponse: undefined,
    onUpdate({ message, replaceLastMessage }) {
      turn.status = 'streaming';
      turn.updates += 1;
      state.messages = [...(replaceLastMessage ? chatMessages.slice(0, -1) : chatMessages), message];
    },
    onToolCall: undefined,
    onFinish(message, { usage, finishReason }) {
      turn.finish = { id: message.id, usage, finishReason };
    },
    generateId,
    fetch: undefined,
    lastMessage: chatMessages[chatMessages.length - 1],
    requestType: 'generate',
  }).then(
    () => ({ ...turn, status: 'ready' }),
    error => {
      if (error.name === 'AbortError') return { ...turn, status: 'ready' };
      return { ...turn, status: 'error', error: String(error.message) };
    },
  );
}

const shown = state => state.messages.map(m => ({ id: m.id, role: m.role, content: m.content, parts: m.parts }));

async function chat(api, { prompts, streamProtocol }) {
  const state = { messages: [] };
  const turns = [];
  for (const prompt of prompts) turns.push(await send(api, 'chat-1', state, prompt, streamProtocol, new AbortController()));
  return { turns, messages: shown(state) };
}

async function stop(api, { prompt, streamProtocol }) {
  const state = { messages: [] };
  const abortController = new AbortController();
  const sent = send(api, 'chat-1', state, prompt, streamProtocol, abortController);
  const answer = () => (state.messages.length > 1 ? state.messages[state.messages.length - 1].content : '');
  for (let i = 0; i < 3000 && !answer(); i++) await new Promise(resolve => setTimeout(resolve, 10));
  const seen = answer();
  abortController.abort();
  const turn = await sent;
  return { seen, status: turn.status, text: answer() };
}

const [mode, api, arg] = process.argv.slice(2);
const run = { chat, stop }[mode];
if (!run || !api || arg === undefined) {
  console.error('usage: node ai4_chat.mjs chat|stop <api-url> <json>');
  process.exit(2);
}
const result = await run(api, JSON.parse(arg));
process.stdout.write(JSON.stringify(result) + '\n');
