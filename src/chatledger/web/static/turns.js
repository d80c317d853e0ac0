// A turn of the open conversation: sending one and showing it as it streams in, following
// one that runs already (begun before a reload, in another tab, or by an edit or a
// regeneration) through GET …/stream, stopping it, and settling the thread on what the
// server stored once it is over. Tabs tell each other of the turns they begin.

import { NetworkError } from "./api.js";
import { hideBanner, showBanner } from "./banner.js";

const BROKEN = "The connection broke before the reply was complete.";
// How often a turn the page asked for, not running yet, is looked for again.
const FOLLOW_RETRY_MS = 100;

// crypto.randomUUID exists only in secure contexts (https, localhost); a server reached
// over plain http at a LAN address is not one, and getRandomValues works everywhere.
export function newKey() {
  if (crypto.randomUUID) return crypto.randomUUID();
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (byte) => byte.toString(16).padStart(2, "0")).join("");
}

/**
 * The turn functions, wired to the composer and the Stop button. `ctx` is the page's shared
 * context (app.js); the ones of other modules it holds are called when the page runs.
 */
export function createTurns(ctx) {
  const { ui, state, thread, report, current } = ctx;

  function showBusy() {
    const turn = state.turn;
    ui.send.hidden = turn !== null;
    ui.stop.hidden = turn === null;
    // Stopping needs a turn that runs: the stream's first event says it does.
    ui.stop.disabled = turn === null || !turn.started || turn.stopping;
    ui.rename.disabled = ui.delete.disabled = current() === null || turn !== null;
    thread.busy = turn !== null;
    ctx.showExamples();
  }

  /** Stop following the turn that streams in; the turn itself goes on at the server. */
  function leaveTurn() {
    if (state.turn === null) return;
    state.turn.controller.abort();
    state.turn.live?.remove();
    state.turn = null;
    showBusy();
  }

  /**
   * A turn the page shows. `own`: this page asked for it (others are followed: begun before
   * a reload, in another tab or elsewhere). `attached`: its events come from following the
   * conversation, not from the request that began it, so the thread shows what was stored
   * up to its user message and the turn's events from there. `live` shows it once it runs.
   */
  function newTurn(conversationId, { own, attached }) {
    const controller = new AbortController();
    return {
      controller,
      conversationId,
      live: null,
      stopping: false,
      started: false,
      own,
      attached,
    };
  }

  /**
   * Show a turn's `events` as they come. Returns whether it ended (with `done` or `error`)
   * and the failure an `error` reported; throws what reading the stream throws.
   */
  async function showEvents(turn, events) {
    let ended = false;
    let failure = null;
    for await (const { type, data } of events) {
      const live = turn.live;
      if (type === "conversation") {
        turn.started = true;
        turn.conversationId = data.conversation_id;
        if (current() === null) ctx.setCurrent({ id: data.conversation_id, title: null });
        if (turn.own) announce(turn.conversationId);
        if (turn.attached) await showUpTo(turn.conversationId, data.user_message_id);
        showBusy();
      } else if (type === "delta") {
        live.delta(data.text);
      } else if (type === "tool_call") {
        live.toolCall(data);
      } else if (type === "tool_result") {
        live.toolResult(data);
      } else if (type === "done") {
        ended = true;
        live.end(data.stopped ? "stopped" : null);
      } else if (type === "error") {
        ended = true;
        failure = data.message;
        live.end("failed");
      }
    }
    return { ended, failure };
  }

  /** The stored thread up to message `messageId`; what follows it, the turn shows. */
  async function showUpTo(id, messageId) {
    const page = await state.api.messages(id);
    if (current() !== id) return;
    const at = page.items.findIndex((m) => m.id === messageId);
    state.messages = at === -1 ? page.items : page.items.slice(0, at + 1);
    state.hasMore = page.has_more;
    thread.show(state.messages, { hasMore: state.hasMore });
  }

  /** The turn is over: show the thread as stored; `failure` (with `retry`) if it failed. */
  async function settle(turn, failure = null, retry = null) {
    if (state.turn !== turn) return;
    await Promise.all([
      ctx.syncThread(turn.conversationId, turn.live),
      ctx.refreshConversations(),
      ctx.refreshTasks(),
    ]);
    if (state.turn !== turn) return;
    state.turn = null;
    showBusy();
    if (failure !== null) showBanner(failure, retry);
  }

  /**
   * Send `text` as a turn of the open conversation and show it as it streams in. `key` is
   * the Idempotency-Key: a retry with the same key replays the turn if it already ran.
   */
  async function send(text, key) {
    const api = state.api;
    const turn = newTurn(current(), { own: true, attached: false });
    turn.live = thread.beginTurn(text);
    state.turn = turn;
    showBusy();
    let outcome;
    try {
      const events = api.chat({
        conversationId: turn.conversationId,
        message: text,
        key,
        signal: turn.controller.signal,
      });
      outcome = await showEvents(turn, events);
      if (!outcome.ended) throw new NetworkError(BROKEN);
    } catch (error) {
      if (state.turn !== turn) return; // left for another conversation, or signed out
      state.turn = null;
      showBusy();
      const live = turn.live;
      if (turn.started) {
        live.end("connection lost");
      } else {
        live.refused("not sent");
      }
      if (error.retryable) {
        report(error, () => {
          live.remove();
          send(text, key);
        });
      } else {
        // Nothing was stored: the text goes back to be edited.
        live.remove();
        if (ui.message.value === "") ui.message.value = text;
        report(error);
      }
      return;
    }
    // The failed turn is stored as such: trying again is a new turn, with a new key.
    await settle(turn, outcome.failure, () => send(text, newKey()));
  }

  /**
   * Show the turn running in conversation `id`, if one is. `turn`, when given, is this
   * page's own, begun by `request` (an edit, a regeneration), which answers only when the
   * turn is over: until it answers, a turn not running yet is waited for.
   */
  async function follow(id, turn = null, request = null) {
    const api = state.api;
    const own = turn !== null;
    turn ??= newTurn(id, { own: false, attached: true });
    let answered = false;
    request?.then(
      () => (answered = true),
      () => (answered = true),
    );
    let events;
    try {
      for (;;) {
        events = await api.attach(id, { signal: turn.controller.signal });
        if (events !== null || !own || answered) break;
        await new Promise((resolve) => setTimeout(resolve, FOLLOW_RETRY_MS));
      }
    } catch (error) {
      if (own && state.turn === turn) {
        state.turn = null;
        showBusy();
      }
      report(error, () => follow(id));
      return;
    }
    // Gone elsewhere meanwhile, or showing another turn: the stream is let go (aborted), not
    // left holding one of the user's places.
    const free = own ? state.turn === turn : state.turn === null;
    if (api !== state.api || current() !== id || !free) {
      turn.controller.abort();
      return;
    }
    if (events === null) {
      // Nothing running: the page's own turn was over before it could be followed.
      if (own) await settle(turn);
      return;
    }
    state.turn = turn;
    turn.live = thread.beginTurn(null);
    showBusy();
    try {
      const outcome = await showEvents(turn, events);
      if (!outcome.ended) throw new NetworkError(BROKEN);
      await settle(turn, outcome.failure);
    } catch (error) {
      if (state.turn !== turn) return;
      state.turn = null;
      showBusy();
      turn.live.end("connection lost");
      report(error, () => {
        turn.live.remove();
        follow(id);
      });
    }
  }

  /** Begin `request(api, id)`, a turn that answers when it is over, and follow it. */
  function beginTurnBy(request) {
    if (state.turn !== null || current() === null) return;
    const id = current();
    const turn = newTurn(id, { own: true, attached: true });
    state.turn = turn;
    showBusy();
    const answer = request(state.api, id);
    // What refuses the turn (a 409 while another runs, a 422) says so; the thread then
    // shows what is stored.
    answer.catch((error) => report(error));
    follow(id, turn, answer);
  }

  /** A new version of user message `seq`, saying `text`. */
  function editMessage(seq, text, key) {
    beginTurnBy((api, id) => api.edit(id, seq, text, key));
  }

  /** A new reply to user message `seq`. */
  function regenerate(seq, key) {
    beginTurnBy((api, id) => api.regenerate(id, seq, key));
  }

  /** Show the branch of message `seq`, another version of a message, from now on. */
  async function showVersion(seq) {
    if (state.turn !== null) return;
    const api = state.api;
    const id = current();
    try {
      await api.setHead(id, seq);
      const page = await api.messages(id);
      if (api !== state.api || current() !== id) return;
      state.messages = page.items;
      state.hasMore = page.has_more;
      thread.show(state.messages, { hasMore: state.hasMore });
    } catch (error) {
      report(error, () => showVersion(seq));
    }
  }

  // Tabs of this browser tell each other of the turns they begin, so that a tab showing the
  // same conversation follows the reply as it is written.
  const turnsChannel =
    "BroadcastChannel" in window ? new BroadcastChannel("chatledger-turns") : null;

  function announce(conversationId) {
    turnsChannel?.postMessage({ userId: state.session?.userId, conversationId });
  }

  turnsChannel?.addEventListener("message", ({ data }) => {
    const shown = state.session?.userId === data.userId && current() === data.conversationId;
    if (shown && state.turn === null) follow(data.conversationId);
  });

  // A turn begun elsewhere (another browser, the terminal) tells no tab here: it shows
  // when the conversation is opened, or when the page comes back into view.
  document.addEventListener("visibilitychange", () => {
    const id = current();
    if (document.visibilityState === "visible" && state.api && id !== null && !state.turn) {
      follow(id);
    }
  });

  async function stop() {
    const turn = state.turn;
    if (turn === null) return; // a retry after the turn ended
    turn.stopping = true;
    showBusy();
    try {
      // The stream then ends with `done`, marked stopped, the partial reply stored.
      await state.api.stop(turn.conversationId);
    } catch (error) {
      turn.stopping = false;
      showBusy();
      report(error, stop);
    }
  }

  ui.stop.addEventListener("click", stop);

  /** Send `text` as a new turn, unless one is running; the composer keeps the focus. */
  function submit(text) {
    if (state.turn !== null || text.trim() === "") return false;
    hideBanner();
    send(text, newKey());
    ui.message.focus();
    return true;
  }

  ui.composer.addEventListener("submit", (event) => {
    event.preventDefault();
    if (submit(ui.message.value)) ui.message.value = "";
  });

  ui.message.addEventListener("keydown", (event) => {
    // Enter sends and Shift+Enter starts a new line; an Enter that ends an IME composition
    // only ends it.
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      ui.composer.requestSubmit();
    }
  });

  return { showBusy, leaveTurn, follow, editMessage, regenerate, showVersion, submit };
}
