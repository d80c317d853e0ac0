// The conversation list, most recently updated first, as the server pages it.

import { h } from "./dom.js";

export function titleOf(conversation) {
  return conversation?.title ?? "Untitled";
}

const when = new Intl.DateTimeFormat(undefined, { dateStyle: "short", timeStyle: "short" });

/** Fill `list` with `conversations`, marking `currentId`; `onOpen(id)` runs on a click. */
export function renderConversations(list, conversations, currentId, onOpen) {
  list.replaceChildren(
    ...conversations.map((conversation) => {
      const updated = conversation.updated_at;
      const button = h(
        "button",
        {
          type: "button",
          class: "conversation",
          "aria-current": conversation.id === currentId ? "true" : null,
        },
        h("span", { class: "conversation-title" }, titleOf(conversation)),
        h("time", { datetime: updated }, when.format(new Date(updated))),
      );
      button.addEventListener("click", () => onOpen(conversation.id));
      return h("li", {}, button);
    }),
  );
  if (conversations.length === 0) {
    list.append(h("li", { class: "empty" }, "No conversations yet."));
  }
}
