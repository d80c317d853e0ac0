// The chat server's HTTP API, as the page uses it. Every failure is an ApiError (the server
// answered with an error status) or a NetworkError (no answer); aborting a request through
// its signal rejects with the browser's AbortError, which callers treat as "never mind".

import { readEvents } from "./sse.js";

export class ApiError extends Error {
  constructor(status, body) {
    super(body?.message ?? `The server answered with status ${status}.`);
    this.name = "ApiError";
    this.status = status;
  }

  /** Whether the same request may succeed later: a turn still running, a rate limit, an
   * unavailable dependency. Other client errors would only fail again. */
  get retryable() {
    return [408, 409, 429].includes(this.status) || this.status >= 500;
  }
}

export class NetworkError extends Error {
  constructor(message = "The server cannot be reached. Check the connection and retry.") {
    super(message);
    this.name = "NetworkError";
    this.retryable = true;
  }
}

async function send(path, { method = "GET", body, headers = {}, signal } = {}) {
  let response;
  try {
    response = await fetch(path, {
      method,
      signal,
      headers: body === undefined ? headers : { "Content-Type": "application/json", ...headers },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (error) {
    if (error.name === "AbortError") throw error;
    throw new NetworkError();
  }
  if (!response.ok) {
    // Errors are JSON {error, message, code}, unless something in between answered.
    throw new ApiError(response.status, await response.json().catch(() => null));
  }
  return response;
}

/** A 12-hour token for `userId` from a server running with --dev. */
export async function requestDevToken(userId) {
  const response = await send("/auth/dev-token", { method: "POST", body: { user_id: userId } });
  return response.json();
}

export class Api {
  #token;
  #base;
  #onUnauthorized;

  /** `onUnauthorized` runs on any 401: the token expired or was never valid. */
  constructor({ token, userId }, onUnauthorized) {
    this.#token = token;
    this.#base = `/api/${encodeURIComponent(userId)}`;
    this.#onUnauthorized = onUnauthorized;
  }

  async #request(path, options = {}) {
    const headers = { Authorization: `Bearer ${this.#token}`, ...options.headers };
    try {
      return await send(this.#base + path, { ...options, headers });
    } catch (error) {
      if (error instanceof ApiError && error.status === 401) this.#onUnauthorized(error);
      throw error;
    }
  }

  async #json(path, options) {
    return (await this.#request(path, options)).json();
  }

  /**
   * A page of conversations, pinned first, then most recently updated first:
   * `{ items, next_cursor }`. With `archived`, the archived ones instead of the others.
   */
  conversations(cursor = null, { archived = false } = {}) {
    const query = new URLSearchParams({ limit: "30" });
    if (cursor) query.set("cursor", cursor);
    if (archived) query.set("archived", "true");
    return this.#json(`/conversations?${query}`);
  }

  conversation(id) {
    return this.#json(`/conversations/${encodeURIComponent(id)}`);
  }

  /** `title` null clears it. */
  rename(id, title) {
    const path = `/conversations/${encodeURIComponent(id)}`;
    return this.#json(path, { method: "PATCH", body: { title } });
  }

  /** Change only the fields given: `{ pinned: true }`, `{ archived: false }`, ... */
  update(id, fields) {
    const path = `/conversations/${encodeURIComponent(id)}`;
    return this.#json(path, { method: "PATCH", body: fields });
  }

  async delete(id) {
    await this.#request(`/conversations/${encodeURIComponent(id)}`, { method: "DELETE" });
  }

  /**
   * The latest messages, or those before seq `before`, oldest first: `{ items, has_more }`;
   * of the head's branch, or of the branch ending at seq `head`.
   */
  messages(id, { before = null, head = null } = {}) {
    const query = new URLSearchParams({ limit: "50" });
    if (before !== null) query.set("before", String(before));
    if (head !== null) query.set("head", String(head));
    return this.#json(`/conversations/${encodeURIComponent(id)}/messages?${query}`);
  }

  stop(id) {
    return this.#json(`/conversations/${encodeURIComponent(id)}/stop`, { method: "POST" });
  }

  /**
   * The messages holding every word of `q`, most relevant first: `{ items, next_cursor }`,
   * each hit with a plain-text `snippet` and the code-point `marks` of the words matched.
   */
  search(q, { signal } = {}) {
    const query = new URLSearchParams({ q, limit: "20" });
    return this.#json(`/search?${query}`, { signal });
  }

  tasks() {
    return this.#json("/tasks");
  }

  /**
   * One chat turn, as the events the server streams: yields `{ type, data }` with `data`
   * parsed. `key` is the Idempotency-Key: sending again with the same key replays a finished
   * turn instead of running it twice, so a retry after a lost connection is safe.
   */
  async *chat({ conversationId, message, key, signal }) {
    const body = conversationId ? { conversation_id: conversationId, message } : { message };
    const response = await this.#request("/chat/stream", {
      method: "POST",
      body,
      headers: { "Idempotency-Key": key, Accept: "text/event-stream" },
      signal,
    });
    yield* Api.#events(response);
  }

  /**
   * The turn running in conversation `id`, from its first event, as `chat` yields them;
   * null if none is running.
   */
  async attach(id, { signal }) {
    const response = await this.#request(`/conversations/${encodeURIComponent(id)}/stream`, {
      headers: { Accept: "text/event-stream" },
      signal,
    });
    return response.status === 204 ? null : Api.#events(response);
  }

  /** A new version of user message `seq`, and its reply; answers when the turn is over. */
  edit(id, seq, message, key) {
    const path = `/conversations/${encodeURIComponent(id)}/messages/${seq}/edit`;
    const headers = { "Idempotency-Key": key };
    return this.#json(path, { method: "POST", body: { message }, headers });
  }

  /** A new reply to user message `seq`; answers when the turn is over. */
  regenerate(id, seq, key) {
    const path = `/conversations/${encodeURIComponent(id)}/messages/${seq}/regenerate`;
    return this.#json(path, { method: "POST", headers: { "Idempotency-Key": key } });
  }

  /** Show the branch of message `seq` (one version of a message) from now on. */
  setHead(id, seq) {
    const path = `/conversations/${encodeURIComponent(id)}/head`;
    return this.#json(path, { method: "PUT", body: { seq } });
  }

  static async *#events(response) {
    try {
      for await (const event of readEvents(response.body)) {
        yield { type: event.type, data: JSON.parse(event.data) };
      }
    } catch (error) {
      if (error.name === "AbortError") throw error;
      throw new NetworkError("The connection broke before the reply was complete.");
    }
  }
}
