// Example prompts for an empty conversation, each one the offline rules agent answers
// (tests/browser/test_page_list.py sends them all); a click sends it.

import { h } from "./dom.js";

export const EXAMPLES = [
  "Add a task to buy milk",
  "What are my tasks?",
  "Mark buy milk as done",
  "What can you do?",
];

/** Fill `list` with a button per example; `onPick(text)` runs on a click. */
export function renderExamples(list, onPick) {
  list.replaceChildren(
    ...EXAMPLES.map((text) => {
      const button = h("button", { type: "button", class: "example" }, text);
      button.addEventListener("click", () => onPick(text));
      return h("li", {}, button);
    }),
  );
}
