// The conversation list as the server pages it (pinned first, then most recently updated
// first), grouped under headings by when each was last updated, in the browser's time zone.

import { h } from "./dom.js";

export function titleOf(conversation) {
  return conversation?.title ?? "Untitled";
}

export const GROUPS = ["Pinned", "Today", "Yesterday", "Previous 7 days", "Older"];

/** Midnight, local time, `days` after the day of `date`; DST days are not 24 hours long. */
function dayStart(date, days = 0) {
  return new Date(date.getFullYear(), date.getMonth(), date.getDate() + days);
}

/** The heading a conversation updated at `updated` is listed under, at `now`. */
export function groupOf(updated, { pinned = false, now = new Date() } = {}) {
  if (pinned) return "Pinned";
  // A time after now (another machine's clock) is today's.
  if (updated >= dayStart(now)) return "Today";
  if (updated >= dayStart(now, -1)) return "Yesterday";
  if (updated >= dayStart(now, -7)) return "Previous 7 days";
  return "Older";
}

/** `conversations` under their headings, in GROUPS order: `[{ name, items }]`, none empty. */
export function groupConversations(conversations, now = new Date()) {
  const groups = new Map(GROUPS.map((name) => [name, []]));
  for (const conversation of conversations) {
    const updated = new Date(conversation.updated_at);
    groups.get(groupOf(updated, { pinned: conversation.pinned, now })).push(conversation);
  }
  return [...groups].filter(([, items]) => items.length > 0).map(([name, items]) => ({ name, items }));
}

const relative = new Intl.RelativeTimeFormat(undefined, { numeric: "auto", style: "short" });
const absolute = new Intl.DateTimeFormat(undefined, { dateStyle: "full", timeStyle: "short" });

/** "now", "5 min. ago", "3 hr. ago" within today; then "yesterday", "3 days ago", ... */
export function relativeTime(date, now = new Date()) {
  const minutes = Math.floor((now - date) / 60_000);
  if (minutes < 1) return relative.format(0, "second");
  if (minutes < 60) return relative.format(-minutes, "minute");
  if (date >= dayStart(now)) return relative.format(-Math.floor(minutes / 60), "hour");
  // Whole days between the calendar days, so that last night is "yesterday".
  const days = Math.round((dayStart(now) - dayStart(date)) / 86_400_000);
  if (days < 7) return relative.format(-days, "day");
  if (days < 30) return relative.format(-Math.floor(days / 7), "week");
  if (days < 365) return relative.format(-Math.floor(days / 30), "month");
  return relative.format(-Math.floor(days / 365), "year");
}

function row(conversation, currentId, { onOpen, onMenu }, now) {
  const updated = new Date(conversation.updated_at);
  const title = titleOf(conversation);
  const open = h(
    "button",
    {
      type: "button",
      class: "conversation",
      "aria-current": conversation.id === currentId ? "true" : null,
    },
    h("span", { class: "conversation-title" }, title),
    h(
      "time",
      { datetime: conversation.updated_at, title: absolute.format(updated) },
      relativeTime(updated, now),
    ),
  );
  open.addEventListener("click", () => onOpen(conversation.id));
  const menu = h(
    "button",
    {
      type: "button",
      class: "row-menu-button",
      "aria-haspopup": "menu",
      "aria-expanded": "false",
      "aria-label": `Options for ${title}`,
      title: "Options",
    },
    "⋯",
  );
  menu.addEventListener("click", () => onMenu(conversation, menu));
  return h("li", { class: "conversation-row", "data-id": conversation.id }, open, menu);
}

/**
 * Fill `list` with `conversations` under their headings, marking `currentId`. `onOpen(id)`
 * runs on a click on a row, `onMenu(conversation, button)` on its options button.
 */
export function renderConversations(list, conversations, currentId, handlers, { empty } = {}) {
  const now = new Date();
  list.replaceChildren(
    ...groupConversations(conversations, now).map(({ name, items }) =>
      h(
        "li",
        { class: "conversation-group", "data-group": name },
        h("h3", {}, name),
        h("ul", {}, ...items.map((c) => row(c, currentId, handlers, now))),
      ),
    ),
  );
  if (conversations.length === 0) {
    list.append(h("li", { class: "empty" }, empty ?? "No conversations yet."));
  }
}
