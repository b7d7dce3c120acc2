// The chat API: JSON requests with the bearer token, readable errors, and the streamed reply
// (Server-Sent Events over fetch, since EventSource cannot POST).

import { getToken } from './auth.js';

const BASE = '/api/v1/chat';

export class ApiError extends Error {
  constructor(message, { status = 0, retryAfter = null } = {}) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
    this.retryAfter = retryAfter;
  }
}

let unauthorized = () => {};

/** `handler` runs whenever the server answers 401 (no token, or a refused one). */
export function onUnauthorized(handler) {
  unauthorized = handler;
}

export const isAbort = (error) => error?.name === 'AbortError';

async function send(method, path, { query, body, form, signal, accept, headers: extra } = {}) {
  const url = new URL(BASE + path, location.origin);
  for (const [key, value] of Object.entries(query ?? {})) {
    if (value != null && value !== '') url.searchParams.set(key, String(value));
  }
  const headers = { Accept: accept ?? 'application/json', ...extra };
  const token = await getToken();
  if (token) headers.Authorization = `Bearer ${token}`;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  let response;
  try {
    response = await fetch(url, {
      method,
      headers,
      // A form (an upload) sets its own multipart Content-Type, with its boundary.
      body: form ?? (body === undefined ? undefined : JSON.stringify(body)),
      signal,
    });
  } catch (error) {
    if (isAbort(error)) throw error;
    throw new ApiError('Could not reach the server. Check your connection and try again.');
  }
  if (!response.ok) throw await errorOf(response);
  return response;
}

/** Calls the API and returns the parsed JSON body (null for 204). */
export async function request(method, path, options = {}) {
  const response = await send(method, path, options);
  return response.status === 204 ? null : response.json();
}

function describe(detail) {
  if (typeof detail === 'string') return detail;
  if (Array.isArray(detail)) {
    // FastAPI's validation errors: name the field unless it is the whole body.
    return detail
      .map((item) => {
        const field = (item.loc ?? []).filter((part) => part !== 'body' && part !== 'query').join('.');
        const message = String(item.msg).replace(/^Value error, /, '');
        return field ? `${field}: ${message}` : message;
      })
      .join('; ');
  }
  return null;
}

async function errorOf(response) {
  const { status } = response;
  let detail = null;
  try {
    detail = describe((await response.json()).detail);
  } catch {
    // Not JSON (a proxy's error page, say): fall back to the status.
  }
  if (status === 401) {
    unauthorized();
    return new ApiError('Sign in to continue.', { status });
  }
  if (status === 429) {
    const seconds = Number.parseInt(response.headers.get('Retry-After') ?? '', 10);
    const wait = Number.isFinite(seconds) ? `in ${formatWait(seconds)}` : 'later';
    return new ApiError(`Too many messages. Try again ${wait}.`, {
      status,
      retryAfter: Number.isFinite(seconds) ? seconds : null,
    });
  }
  return new ApiError(detail ?? `The server answered ${status}. Try again.`, { status });
}

function formatWait(seconds) {
  if (seconds < 60) return `${seconds} second${seconds === 1 ? '' : 's'}`;
  const minutes = Math.ceil(seconds / 60);
  return `${minutes} minute${minutes === 1 ? '' : 's'}`;
}

/**
 * A new Idempotency-Key: one per message sent (or reply regenerated), the same when that
 * request is sent again, so that the server stores it once (docs/api.md, Idempotency keys).
 * crypto.randomUUID needs a secure context (HTTPS or localhost); getRandomValues does not.
 */
export function newIdempotencyKey() {
  if (crypto.randomUUID) return crypto.randomUUID();
  return Array.from(crypto.getRandomValues(new Uint8Array(16)), (byte) => byte.toString(16).padStart(2, '0')).join('');
}

/**
 * Sends a message under the Idempotency-Key `key` and calls `onEvent({event, data})` for each
 * event of the streamed reply (`session`, `delta`..., then `done` or `error`). Resolves when
 * the stream ends.
 */
export function streamChat(body, key, options) {
  return streamFrom('/stream', body, { ...options, headers: { 'Idempotency-Key': key } });
}

/** Regenerates the assistant reply `messageId` under `key`: the same events as streamChat. */
export function streamRegenerate(sessionId, messageId, key, options) {
  const path = `/sessions/${encodeURIComponent(sessionId)}/messages/${encodeURIComponent(messageId)}/regenerate`;
  return streamFrom(path, undefined, { ...options, headers: { 'Idempotency-Key': key } });
}

/**
 * Resumes the stream of a reply of the session after the event `lastEventId` (the `id` of the
 * last event received; `<reply id>:0` for the whole reply): the same events, from there.
 * Throws an ApiError with status 204 when there is nothing to resume.
 */
export function resumeStream(sessionId, lastEventId, options) {
  const path = `/sessions/${encodeURIComponent(sessionId)}/stream`;
  return streamFrom(path, undefined, { ...options, method: 'GET', headers: { 'Last-Event-ID': lastEventId } });
}

async function streamFrom(path, body, { signal, onEvent, method = 'POST', headers }) {
  const response = await send(method, path, { body, signal, headers, accept: 'text/event-stream' });
  if (response.status === 204) throw new ApiError('This reply is no longer being written.', { status: 204 });
  try {
    for await (const event of readEvents(response.body)) onEvent(event);
  } catch (error) {
    if (isAbort(error) || error instanceof ApiError) throw error;
    throw new ApiError('The connection was lost before the reply finished.');
  }
}

const LINE_END = /\r\n|\r|\n/;

/**
 * Parses a text/event-stream body (the WHATWG rules, minus `retry`, unused here). Each event
 * is `{event, data, id}`; `id` is the last id the stream set (null before any).
 */
export async function* readEvents(stream) {
  const reader = stream.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = '';
  let event = '';
  let data = [];
  let id = null;
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return; // an event without its closing blank line is dropped, as specified
      buffer += value;
      for (;;) {
        const match = LINE_END.exec(buffer);
        // A lone CR at the end may be the first half of a CRLF: wait for more.
        if (!match || (match[0] === '\r' && match.index === buffer.length - 1)) break;
        const line = buffer.slice(0, match.index);
        buffer = buffer.slice(match.index + match[0].length);
        if (line === '') {
          if (data.length) yield { event: event || 'message', data: parseData(data.join('\n')), id };
          event = '';
          data = [];
          continue;
        }
        if (line.startsWith(':')) continue; // a comment: the server's keep-alive ping
        const colon = line.indexOf(':');
        const field = colon === -1 ? line : line.slice(0, colon);
        let fieldValue = colon === -1 ? '' : line.slice(colon + 1);
        if (fieldValue.startsWith(' ')) fieldValue = fieldValue.slice(1);
        if (field === 'event') event = fieldValue;
        else if (field === 'data') data.push(fieldValue);
        else if (field === 'id' && !fieldValue.includes('\0')) id = fieldValue;
      }
    }
  } finally {
    reader.cancel().catch(() => {});
  }
}

function parseData(text) {
  try {
    return JSON.parse(text);
  } catch {
    throw new ApiError('The server sent an event that could not be read.');
  }
}
