// The chat page: sign-in, the conversation list and search, the thread and its streaming
// turn, and the tasks panel, wired to the chat server's API. All state lives on the server
// except who is signed in (localStorage, shared by the tabs), the conversation a tab shows
// (sessionStorage) and the theme; the page shows what the server stored after every turn.
//
// This module holds the page's state and elements, signs in and out, and composes the
// others: list.js (the conversation list and search), current.js (the open conversation)
// and turns.js (a turn as it runs); it keeps the tasks panel, the panels on narrow screens
// and the keyboard shortcuts.

import { Api, ApiError, NetworkError, requestDevToken } from "./api.js";
import { hideBanner, showBanner } from "./banner.js";
import { createCurrent } from "./current.js";
import { byId } from "./dom.js";
import { createList } from "./list.js";
import { closeMenu } from "./menu.js";
import { clearSession, loadSession, saveSession, subjectOf, watchSession } from "./session.js";
import { renderTasks } from "./tasks.js";
import "./theme.js";
import { Thread } from "./thread.js";
import { createTurns, newKey } from "./turns.js";

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
  turn: null, // the turn shown while it runs (turns.js, newTurn)
};

const current = () => state.current?.id ?? null;

// The thread calls back into modules made below with it, once the page runs.
const thread = new Thread(byId("thread"), {
  onLoadEarlier: () => ctx.loadEarlier(),
  onEdit: (seq, text) => ctx.editMessage(seq, text, newKey()),
  onRegenerate: (seq) => ctx.regenerate(seq, newKey()),
  onVersion: (seq) => ctx.showVersion(seq),
});

// What the modules share, passed to each. Each adds its functions to it and calls the
// others' through it, never by importing them: the list opens conversations, which follow
// turns, which list the conversations anew, a cycle of imports otherwise.
const ctx = { ui, state, thread, report, current, refreshTasks, closePanels };
Object.assign(ctx, createTurns(ctx), createCurrent(ctx), createList(ctx));

/** Show what went wrong, with `retry` when trying again may help. */
function report(error, retry = null) {
  // An abort is the page's own doing; a 401 has already sent the user to sign in.
  if (error.name === "AbortError" || (error instanceof ApiError && error.status === 401)) return;
  if (!(error instanceof ApiError || error instanceof NetworkError)) throw error;
  showBanner(error.message, error.retryable ? retry : null);
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
  ctx.refreshConversations();
  refreshTasks();
  if (session.conversationId) ctx.openConversation(session.conversationId);
  else ctx.newConversation();
  ui.message.focus();
}

function signIn(session) {
  hideBanner();
  saveSession(session);
  start(session);
}

/** Forget the signed-in user: nothing of theirs may stay on screen for the next one. */
function reset() {
  ctx.leaveTurn();
  ctx.endRename();
  closeMenu();
  ctx.search.clear();
  // Answers still on their way are dropped, as they belong to an Api no longer state.api.
  Object.assign(state, { session: null, api: null, conversations: [], nextCursor: null });
  Object.assign(state, { current: null, messages: [], hasMore: false, archived: false });
  thread.clear();
  ctx.showConversations();
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
    ctx.newConversation();
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
