// The chat page: sign-in, the conversation list and search, the thread and its streaming
// turn, and the tasks panel, wired to the chat server's API. All state lives on the server
// except who is signed in (localStorage, shared by the tabs), the conversation a tab shows
// (sessionStorage) and the theme; the page shows what the server stored after every turn.

import { Api, ApiError, NetworkError, requestDevToken } from "./api.js";
import { hideBanner, showBanner } from "./banner.js";
import { relativeTime, renderConversations, titleOf } from "./conversations.js";
import { byId } from "./dom.js";
import { renderExamples } from "./examples.js";
import { markWords, messageElement } from "./highlight.js";
import { closeMenu, openMenu } from "./menu.js";
import { matchedWords, Search } from "./search.js";
import {
  clearSession,
  loadSession,
  rememberConversation,
  saveSession,
  subjectOf,
  watchSession,
} from "./session.js";
import { renderTasks } from "./tasks.js";
import "./theme.js";
import { Thread } from "./thread.js";

// The server marks the page it serves when POST /auth/dev-token exists (`serve --dev`).
const devLogin = document.querySelector('meta[name="chatledger-dev-login"]').content === "true";

const ui = {
  signin: byId("signin"),
  signinNote: byId("signin-note"),
  app: byId("app"),
  conversations: byId("conversation-list"),
  more: byId("more-conversations"),
  listHeading: byId("list-heading"),
  listView: byId("list-view"),
  showArchived: byId("show-archived"),
  searchResults: byId("search-results"),
  examples: byId("examples"),
  title: byId("title"),
  rename: byId("rename"),
  renameForm: byId("rename-form"),
  renameInput: byId("rename-input"),
  delete: byId("delete"),
  composer: byId("composer"),
  message: byId("message"),
  send: byId("send"),
  stop: byId("stop"),
  tasks: byId("task-list"),
};

const state = {
  session: null, // { token, userId, conversationId }
  api: null,
  conversations: [], // the pages loaded so far, newest first
  nextCursor: null,
  archived: false, // the list shows the archived conversations instead of the others
  current: null, // the open conversation, or null for a new one
  messages: [], // the open conversation's loaded messages, oldest first
  hasMore: false,
  loaded: false, // the open conversation's messages have arrived
  turn: null, // { controller, conversationId, live, stopping } while a turn streams in
};

const thread = new Thread(byId("thread"), {
  onLoadEarlier: loadEarlier,
  onEdit: (seq, text) => editMessage(seq, text, newKey()),
  onRegenerate: (seq) => regenerate(seq, newKey()),
  onVersion: showVersion,
});

const search = new Search(
  { input: byId("search"), results: ui.searchResults, note: byId("search-note") },
  {
    api: () => state.api,
    onActive: (active) => {
      // While the box holds a query, its results stand in for the list.
      ui.searchResults.hidden = !active;
      ui.listView.hidden = active;
    },
    onOpen: openHit,
    onError: report,
  },
);

const current = () => state.current?.id ?? null;

const BROKEN = "The connection broke before the reply was complete.";
// How often a turn the page asked for, not running yet, is looked for again.
const FOLLOW_RETRY_MS = 100;

/** Show what went wrong, with `retry` when trying again may help. */
function report(error, retry = null) {
  // An abort is the page's own doing; a 401 has already sent the user to sign in.
  if (error.name === "AbortError" || (error instanceof ApiError && error.status === 401)) return;
  if (!(error instanceof ApiError || error instanceof NetworkError)) throw error;
  showBanner(error.message, error.retryable ? retry : null);
}

// crypto.randomUUID exists only in secure contexts (https, localhost); a server reached
// over plain http at a LAN address is not one, and getRandomValues works everywhere.
function newKey() {
  if (crypto.randomUUID) return crypto.randomUUID();
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (byte) => byte.toString(16).padStart(2, "0")).join("");
}

// -- signing in and out ------------------------------------------------------------------

function showSignIn(note = null) {
  ui.app.hidden = true;
  ui.signin.hidden = false;
  byId("dev-signin").hidden = !devLogin;
  ui.signinNote.textContent = note ?? "";
  ui.signinNote.hidden = note === null;
  byId(devLogin ? "dev-user" : "token").focus();
}

function start(session) {
  state.session = session;
  state.api = new Api(session, () => signOut("Your session has ended. Sign in again."));
  ui.signin.hidden = true;
  ui.app.hidden = false;
  byId("user").textContent = session.userId;
  refreshConversations();
  refreshTasks();
  if (session.conversationId) openConversation(session.conversationId);
  else newConversation();
  ui.message.focus();
}

function signIn(session) {
  hideBanner();
  saveSession(session);
  start(session);
}

/** Forget the signed-in user: nothing of theirs may stay on screen for the next one. */
function reset() {
  leaveTurn();
  endRename();
  closeMenu();
  search.clear();
  // Answers still on their way are dropped, as they belong to an Api no longer state.api.
  Object.assign(state, { session: null, api: null, conversations: [], nextCursor: null });
  Object.assign(state, { current: null, messages: [], hasMore: false, archived: false });
  thread.clear();
  showConversations();
  renderTasks(ui.tasks, []);
  hideBanner();
}

function signOut(note = null) {
  clearSession(); // in every tab: the others hear of it through the storage event
  reset();
  showSignIn(note);
}

// Another tab signed in or out; this one follows, keeping its conversation if the same
// user signed in again.
watchSession((session) => {
  if (session?.token === state.session?.token) return;
  const sameUser = session?.userId === state.session?.userId;
  if (state.session !== null) reset();
  if (session === null) showSignIn("You signed out in another tab.");
  else start(sameUser ? session : { ...session, conversationId: null });
});

byId("dev-signin").addEventListener("submit", async (event) => {
  event.preventDefault();
  try {
    const { token, user_id: userId } = await requestDevToken(byId("dev-user").value.trim());
    signIn({ token, userId, conversationId: null });
  } catch (error) {
    report(error, () => byId("dev-signin").requestSubmit());
  }
});

byId("token-signin").addEventListener("submit", (event) => {
  event.preventDefault();
  const field = byId("token");
  const token = field.value.trim();
  const userId = subjectOf(token);
  if (userId === null) {
    showBanner("That is not a JWT with a subject (sub). Paste the whole token.");
    return;
  }
  field.value = "";
  signIn({ token, userId, conversationId: null });
});

byId("signout").addEventListener("click", () => signOut());

// -- the conversation list ---------------------------------------------------------------

function setCurrent(conversation) {
  state.current = conversation;
  state.session.conversationId = conversation?.id ?? null;
  rememberConversation(state.session.conversationId);
  showConversations();
}

function showConversations() {
  closeMenu(); // its row is drawn anew
  // A row drawn anew keeps the keyboard's place: its button of the same kind is focused.
  const focused = document.activeElement;
  const row = ui.conversations.contains(focused) ? focused.closest(".conversation-row") : null;
  renderConversations(
    ui.conversations,
    state.conversations,
    current(),
    { onOpen: openConversation, onMenu: showRowMenu },
    { empty: state.archived ? "No archived conversations." : null },
  );
  if (row !== null) {
    const again = `.conversation-row[data-id="${CSS.escape(row.dataset.id)}"] .${focused.className}`;
    ui.conversations.querySelector(again)?.focus();
  }
  ui.more.hidden = state.nextCursor === null;
  ui.title.textContent = state.current === null ? "New conversation" : titleOf(state.current);
  showBusy();
}

async function refreshConversations() {
  const api = state.api;
  const archived = state.archived;
  try {
    const page = await api.conversations(null, { archived });
    if (api !== state.api || archived !== state.archived) return;
    state.conversations = page.items;
    state.nextCursor = page.next_cursor;
    state.current = page.items.find((c) => c.id === current()) ?? state.current;
    showConversations();
  } catch (error) {
    report(error, refreshConversations);
  }
}

async function moreConversations() {
  const api = state.api;
  try {
    const archived = state.archived;
    const page = await api.conversations(state.nextCursor, { archived });
    if (api !== state.api || archived !== state.archived) return;
    // A conversation updated meanwhile moved to the front: it is listed there already.
    const listed = new Set(state.conversations.map((c) => c.id));
    state.conversations.push(...page.items.filter((c) => !listed.has(c.id)));
    state.nextCursor = page.next_cursor;
    showConversations();
  } catch (error) {
    report(error, moreConversations);
  }
}

ui.more.addEventListener("click", moreConversations);

ui.showArchived.addEventListener("click", () => {
  state.archived = !state.archived;
  ui.showArchived.setAttribute("aria-pressed", String(state.archived));
  ui.listHeading.textContent = state.archived ? "Archived" : "Chats";
  state.conversations = [];
  state.nextCursor = null;
  showConversations();
  refreshConversations();
});

/** Change `fields` of conversation `id` (pinned, archived), then list them anew. */
async function updateConversation(id, fields) {
  const api = state.api;
  try {
    const conversation = await api.update(id, fields);
    if (api !== state.api) return;
    if (current() === id) setCurrent(conversation);
    await refreshConversations();
  } catch (error) {
    report(error, () => updateConversation(id, fields));
  }
}

async function renameFromList(id) {
  if (current() !== id && !(await openConversation(id))) return;
  if (current() === id && state.turn === null) startRename();
}

function showRowMenu(conversation, button) {
  const { id, pinned, archived } = conversation;
  openMenu(button, [
    { label: pinned ? "Unpin" : "Pin", run: () => updateConversation(id, { pinned: !pinned }) },
    { label: "Rename", run: () => renameFromList(id) },
    {
      label: archived ? "Unarchive" : "Archive",
      run: () => updateConversation(id, { archived: !archived }),
    },
    { label: "Delete", run: () => deleteConversation(conversation), danger: true },
  ]);
}

// Relative times ("5 min. ago") age while the page stays open.
setInterval(() => {
  const now = new Date();
  for (const time of ui.conversations.querySelectorAll("time")) {
    time.textContent = relativeTime(new Date(time.dateTime), now);
  }
}, 60_000);

// -- the open conversation ---------------------------------------------------------------

async function openConversation(id) {
  leaveTurn();
  closePanels();
  hideBanner();
  const api = state.api;
  const listed = state.conversations.find((c) => c.id === id);
  setCurrent(listed ?? { id, title: null });
  state.messages = [];
  state.hasMore = false;
  state.loaded = false;
  showExamples();
  thread.loading();
  try {
    // A conversation not in the pages loaded (the one restored after a reload, say) is
    // asked for by itself, for its title.
    const [page, conversation] = await Promise.all([
      api.messages(id),
      listed ? null : api.conversation(id),
    ]);
    if (api !== state.api || current() !== id) return false;
    if (conversation) setCurrent(conversation);
    state.messages = page.items;
    state.hasMore = page.has_more;
    state.loaded = true;
    thread.show(state.messages, { hasMore: state.hasMore });
    showExamples();
  } catch (error) {
    if (api !== state.api || current() !== id) return false;
    if (error instanceof ApiError && error.status === 404) newConversation();
    report(error, () => openConversation(id));
    return false;
  }
  // A reply still being written (the page was reloaded, or the turn began elsewhere).
  follow(id);
  return true;
}

/**
 * Open a search hit's conversation at its message, marked. A message older than the
 * latest page is loaded back to, a page at a time, as "Load earlier" would.
 */
async function openHit(hit) {
  const id = hit.conversation_id;
  // The conversation open with a reply streaming in stays as it is; otherwise it is read
  // anew, as the hit may be newer than what is shown.
  if ((current() !== id || state.turn === null) && !(await openConversation(id))) return;
  const api = state.api;
  const shown = () => api === state.api && current() === id;
  while (shown() && !state.messages.some((m) => m.seq === hit.seq)) {
    if (!state.hasMore || state.messages.length === 0 || state.messages[0].seq < hit.seq) break;
    if (!(await loadEarlier())) return;
  }
  if (!shown()) return;
  const element = messageElement(byId("thread"), state.messages, hit.seq);
  if (element === null) {
    // Edited away: the hit is on a branch the conversation has left.
    showBanner("That message is no longer on this conversation's current branch.");
    return;
  }
  markWords(element, matchedWords(hit));
  element.classList.add("found");
  element.scrollIntoView({ block: "center" });
}

function newConversation() {
  leaveTurn();
  closePanels();
  hideBanner();
  setCurrent(null);
  state.messages = [];
  state.hasMore = false;
  state.loaded = true;
  thread.clear();
  showExamples();
}

/** Example prompts in a conversation with no messages, until a turn starts. */
function showExamples() {
  ui.examples.hidden = !(state.loaded && state.messages.length === 0 && state.turn === null);
}

renderExamples(byId("example-prompts"), (text) => submit(text));

byId("new-conversation").addEventListener("click", () => {
  newConversation();
  ui.message.focus();
});

async function loadEarlier() {
  const api = state.api;
  const id = current();
  try {
    // The branch shown, which the head may have left meanwhile (another tab showed
    // another version): the head's branch before that seq could skip part of this one.
    const head = state.messages.at(-1).seq;
    const page = await api.messages(id, { before: state.messages[0].seq, head });
    if (api !== state.api || current() !== id) return false;
    state.messages = [...page.items, ...state.messages];
    state.hasMore = page.has_more;
    thread.show(state.messages, { hasMore: state.hasMore, keepPlace: true });
    return true;
  } catch (error) {
    report(error, loadEarlier);
    return false;
  }
}

/**
 * Bring the thread up to what the server stored, in place of the turn `live` showed (null:
 * none showed).
 */
async function syncThread(id, live) {
  const api = state.api;
  try {
    const page = await api.messages(id);
    if (api !== state.api || current() !== id) return;
    // The loaded messages must stay one branch without gaps: earlier ones stay loaded if
    // the page follows on from one of them (seqs count every branch, so it is the parent
    // that says); otherwise (an edit began another branch, or more arrived than one page
    // holds) the thread starts again from the newest page.
    const parent = page.has_more ? page.items[0]?.parent_seq : undefined;
    const at = parent == null ? -1 : state.messages.findIndex((m) => m.seq === parent);
    if (at !== -1) {
      state.messages = [...state.messages.slice(0, at + 1), ...page.items];
    } else {
      state.messages = page.items;
      state.hasMore = page.has_more;
    }
    live?.remove();
    thread.show(state.messages, { hasMore: state.hasMore });
    showExamples();
  } catch (error) {
    report(error, () => syncThread(id, live));
  }
}

function startRename() {
  ui.renameInput.value = state.current?.title ?? "";
  ui.renameForm.hidden = false;
  ui.title.hidden = ui.rename.hidden = ui.delete.hidden = true;
  ui.renameInput.focus();
  ui.renameInput.select();
}

function endRename() {
  ui.renameForm.hidden = true;
  ui.title.hidden = ui.rename.hidden = ui.delete.hidden = false;
}

async function rename(id, title) {
  const api = state.api;
  try {
    // An empty title clears it.
    const conversation = await api.rename(id, title.trim() || null);
    if (api !== state.api) return;
    endRename();
    if (current() === id) setCurrent(conversation);
    await refreshConversations();
  } catch (error) {
    report(error, () => rename(id, title));
  }
}

async function deleteConversation(conversation) {
  if (!confirm(`Delete “${titleOf(conversation)}” and all of its messages?`)) return;
  const api = state.api;
  const { id } = conversation;
  try {
    await api.delete(id);
    if (api !== state.api) return;
    if (current() === id) newConversation();
    await refreshConversations();
  } catch (error) {
    report(error, () => deleteConversation(conversation));
  }
}

ui.rename.addEventListener("click", startRename);
byId("rename-cancel").addEventListener("click", endRename);
ui.renameInput.addEventListener("keydown", (event) => {
  if (event.key === "Escape") {
    event.preventDefault(); // cancels the rename, stops no reply
    endRename();
  }
});
ui.renameForm.addEventListener("submit", (event) => {
  event.preventDefault();
  rename(current(), ui.renameInput.value);
});
ui.delete.addEventListener("click", () => deleteConversation(state.current));

// -- a turn ------------------------------------------------------------------------------

function showBusy() {
  const turn = state.turn;
  ui.send.hidden = turn !== null;
  ui.stop.hidden = turn === null;
  // Stopping needs a turn that runs: the stream's first event says it does.
  ui.stop.disabled = turn === null || !turn.started || turn.stopping;
  ui.rename.disabled = ui.delete.disabled = current() === null || turn !== null;
  thread.busy = turn !== null;
  showExamples();
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
  return { controller, conversationId, live: null, stopping: false, started: false, own, attached };
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
      if (current() === null) setCurrent({ id: data.conversation_id, title: null });
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
    syncThread(turn.conversationId, turn.live),
    refreshConversations(),
    refreshTasks(),
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
const turnsChannel = "BroadcastChannel" in window ? new BroadcastChannel("chatledger-turns") : null;

function announce(conversationId) {
  turnsChannel?.postMessage({ userId: state.session?.userId, conversationId });
}

turnsChannel?.addEventListener("message", ({ data }) => {
  const shown = state.session?.userId === data.userId && current() === data.conversationId;
  if (shown && state.turn === null) follow(data.conversationId);
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

// -- tasks -------------------------------------------------------------------------------

async function refreshTasks() {
  const api = state.api;
  try {
    const { items } = await api.tasks();
    if (api !== state.api) return;
    renderTasks(ui.tasks, items);
  } catch (error) {
    report(error, refreshTasks);
  }
}

// -- panels on narrow screens ------------------------------------------------------------

const PANELS = ["conversations", "tasks"];

function closePanels() {
  for (const name of PANELS) {
    document.body.classList.remove(`show-${name}`);
    byId(`toggle-${name}`).setAttribute("aria-expanded", "false");
  }
}

for (const name of PANELS) {
  byId(`toggle-${name}`).addEventListener("click", () => {
    const open = !document.body.classList.contains(`show-${name}`);
    closePanels();
    document.body.classList.toggle(`show-${name}`, open);
    byId(`toggle-${name}`).setAttribute("aria-expanded", String(open));
  });
}

// -- keyboard shortcuts ------------------------------------------------------------------

document.addEventListener("keydown", (event) => {
  // Keys a menu, the search box or the rename field used are theirs alone.
  if (state.session === null || event.defaultPrevented || event.isComposing) return;
  if ((event.ctrlKey || event.metaKey) && event.shiftKey && event.code === "KeyO") {
    event.preventDefault(); // as in ChatGPT: a new chat
    newConversation();
    ui.message.focus();
  } else if (event.key === "Escape" && event.shiftKey) {
    event.preventDefault();
    closePanels();
    ui.message.focus();
  } else if (event.key === "Escape" && !ui.stop.hidden && !ui.stop.disabled) {
    event.preventDefault();
    ui.stop.click();
  }
});

// -- start -------------------------------------------------------------------------------

const saved = loadSession();
if (saved) start(saved);
else showSignIn();
