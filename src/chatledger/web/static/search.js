// The search box over all of the user's conversations. Results come as the user types, a
// moment after the last key; each hit shows its conversation's title and a snippet with the
// matched words marked, built from the snippet's text and offsets, never parsed as HTML.

import { ApiError } from "./api.js";
import { h } from "./dom.js";

const DEBOUNCE_MS = 250;

/** The parts of `text` between code-point `marks`, the marked ones as <mark> elements. */
export function markedText(text, marks) {
  // The offsets count code points; a JavaScript string index counts UTF-16 units.
  const chars = Array.from(text);
  const parts = [];
  let at = 0;
  for (const [start, end] of [...marks].sort((a, b) => a[0] - b[0])) {
    if (start < at || end <= start) continue;
    parts.push(chars.slice(at, start).join(""), h("mark", {}, chars.slice(start, end).join("")));
    at = end;
  }
  parts.push(chars.slice(at).join(""));
  return parts.filter((part) => part !== "");
}

/** The words of a hit's snippet that matched the query, as they are written there. */
export function matchedWords({ snippet, marks }) {
  const chars = Array.from(snippet);
  return [...new Set(marks.map(([start, end]) => chars.slice(start, end).join("")))];
}

export class Search {
  #input;
  #results;
  #note;
  #api;
  #onActive;
  #onOpen;
  #onError;
  #timer = null;
  #controller = null;

  /**
   * `api()` is the signed-in user's Api; `onActive(active)` runs when the box fills or
   * empties (results then stand in for the list); `onOpen(hit)` on a click on a hit;
   * `onError(error, retry)` on a failure other than a query that cannot be searched.
   */
  constructor({ input, results, note }, { api, onActive, onOpen, onError }) {
    this.#input = input;
    this.#results = results;
    this.#note = note;
    this.#api = api;
    this.#onActive = onActive;
    this.#onOpen = onOpen;
    this.#onError = onError;
    input.addEventListener("input", () => this.#schedule());
    input.addEventListener("keydown", (event) => {
      if (event.key === "Escape" && input.value !== "") {
        event.preventDefault(); // an Escape that clears the box stops no reply
        this.clear();
      }
    });
  }

  get active() {
    return this.#input.value.trim() !== "";
  }

  /** An empty box, and the list back in place of the results. */
  clear() {
    this.#input.value = "";
    this.#schedule();
  }

  focus() {
    this.#input.focus();
  }

  #schedule() {
    clearTimeout(this.#timer);
    this.#controller?.abort();
    this.#controller = null;
    this.#onActive(this.active);
    if (!this.active) {
      this.#show([], null);
      return;
    }
    this.#timer = setTimeout(() => this.#run(this.#input.value.trim()), DEBOUNCE_MS);
  }

  async #run(query) {
    const controller = new AbortController();
    this.#controller = controller;
    try {
      const page = await this.#api().search(query, { signal: controller.signal });
      if (this.#controller !== controller) return;
      this.#show(page.items, page.items.length === 0 ? "Nothing found." : null);
    } catch (error) {
      if (this.#controller !== controller || error.name === "AbortError") return;
      if (error instanceof ApiError && error.status === 422) {
        // A query of no words, or too long: said where the results would be, quietly.
        this.#show([], error.message);
      } else {
        this.#show([], null);
        this.#onError(error, () => this.#run(query));
      }
    }
  }

  #show(hits, note) {
    this.#note.textContent = note ?? "";
    this.#note.hidden = note === null;
    this.#results.replaceChildren(...hits.map((hit) => this.#hit(hit)));
  }

  #hit(hit) {
    const button = h(
      "button",
      { type: "button", class: "search-hit" },
      h("span", { class: "search-hit-title" }, hit.title ?? "Untitled"),
      h("span", { class: "snippet" }, ...markedText(hit.snippet, hit.marks)),
    );
    button.addEventListener("click", () => this.#onOpen(hit));
    return h("li", { "data-role": hit.role }, button);
  }
}
