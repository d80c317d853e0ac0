// The conversation list and the search box, wired to the API: loading the list a page at a
// time, the Archived view, a row's menu (pin, rename, archive, delete), relative times that
// age, and a search hit opened at its message. conversations.js draws the list; search.js
// runs the box.

import { showBanner } from "./banner.js";
import { relativeTime, renderConversations, titleOf } from "./conversations.js";
import { byId } from "./dom.js";
import { markWords, messageElement } from "./highlight.js";
import { closeMenu, openMenu } from "./menu.js";
import { matchedWords, Search } from "./search.js";
import { rememberConversation } from "./session.js";

/**
 * The list's functions and the search box, wired to their buttons. `ctx` is the page's
 * shared context (app.js); the ones of other modules it holds are called when the page runs.
 */
export function createList(ctx) {
  const { ui, state, report, current } = ctx;

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
      { onOpen: (id) => ctx.openConversation(id), onMenu: showRowMenu },
      { empty: state.archived ? "No archived conversations." : null },
    );
    if (row !== null) {
      const again = `.conversation-row[data-id="${CSS.escape(row.dataset.id)}"] .${focused.className}`;
      ui.conversations.querySelector(again)?.focus();
    }
    ui.more.hidden = state.nextCursor === null;
    ui.title.textContent = state.current === null ? "New conversation" : titleOf(state.current);
    ctx.showBusy();
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
    if (current() !== id && !(await ctx.openConversation(id))) return;
    if (current() === id && state.turn === null) ctx.startRename();
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
      { label: "Delete", run: () => ctx.deleteConversation(conversation), danger: true },
    ]);
  }

  // Relative times ("5 min. ago") age while the page stays open.
  setInterval(() => {
    const now = new Date();
    for (const time of ui.conversations.querySelectorAll("time")) {
      time.textContent = relativeTime(new Date(time.dateTime), now);
    }
  }, 60_000);

  /**
   * Open a search hit's conversation at its message, marked. A message older than the
   * latest page is loaded back to, a page at a time, as "Load earlier" would.
   */
  async function openHit(hit) {
    const id = hit.conversation_id;
    // The conversation open with a reply streaming in stays as it is; otherwise it is read
    // anew, as the hit may be newer than what is shown.
    if ((current() !== id || state.turn === null) && !(await ctx.openConversation(id))) return;
    const api = state.api;
    const shown = () => api === state.api && current() === id;
    while (shown() && !state.messages.some((m) => m.seq === hit.seq)) {
      if (!state.hasMore || state.messages.length === 0 || state.messages[0].seq < hit.seq) break;
      if (!(await ctx.loadEarlier())) return;
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

  return { search, setCurrent, showConversations, refreshConversations };
}
