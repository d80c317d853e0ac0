// The conversation the page shows (state.current; conversations.js draws the list of them):
// opening one, or a new one, its messages, loaded a page at a time and brought up to what
// the server stored after a turn, its example prompts while empty, renaming and deleting it.

import { ApiError } from "./api.js";
import { hideBanner } from "./banner.js";
import { titleOf } from "./conversations.js";
import { byId } from "./dom.js";
import { renderExamples } from "./examples.js";

/**
 * The open conversation's functions, wired to its buttons. `ctx` is the page's shared
 * context (app.js); the ones of other modules it holds are called when the page runs.
 */
export function createCurrent(ctx) {
  const { ui, state, thread, report, current } = ctx;

  async function openConversation(id) {
    ctx.leaveTurn();
    ctx.closePanels();
    hideBanner();
    const api = state.api;
    const listed = state.conversations.find((c) => c.id === id);
    ctx.setCurrent(listed ?? { id, title: null });
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
      if (conversation) ctx.setCurrent(conversation);
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
    ctx.follow(id);
    return true;
  }

  function newConversation() {
    ctx.leaveTurn();
    ctx.closePanels();
    hideBanner();
    ctx.setCurrent(null);
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

  renderExamples(byId("example-prompts"), (text) => ctx.submit(text));

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
      if (current() === id) ctx.setCurrent(conversation);
      await ctx.refreshConversations();
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
      await ctx.refreshConversations();
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

  return {
    openConversation,
    newConversation,
    showExamples,
    loadEarlier,
    syncThread,
    startRename,
    endRename,
    deleteConversation,
  };
}
