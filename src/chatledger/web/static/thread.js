// The messages of one conversation: stored history, and the turn streaming in right now.
// Tool calls show as compact badges (a <details> element) that open to their arguments
// and result; a call and its result are paired by the call's id. A reply is shown as
// markdown (markdown.js), a user's message as the plain text it was typed as.

import { copyButton } from "./copy.js";
import { h } from "./dom.js";
import { renderMarkdown } from "./markdown.js";

const AT_BOTTOM_PX = 40;

/** The value of JSON text; text that is not JSON stays text. */
function parsed(text) {
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

/** A value shown as indented JSON; text that is not JSON is shown as it is. */
function pretty(value) {
  value = typeof value === "string" ? parsed(value) : value;
  return typeof value === "string" ? value : JSON.stringify(value, null, 2);
}

/**
 * A message's element, with a button that copies its text as written; `setText` shows
 * other text in it (a reply streaming in).
 */
function bubble(role, text, mark = null) {
  let raw = text;
  const body =
    role === "assistant" ? h("div", { class: "text markdown" }) : h("p", { class: "text" });
  const actions = h("div", { class: "actions" }, copyButton(() => raw, "Copy text"));
  const element = h(
    "div",
    { class: `message ${role}`, "data-mark": mark },
    body,
    mark && h("span", { class: "mark" }, mark),
    actions,
  );
  const setText = (value) => {
    raw = value;
    if (role === "assistant") body.replaceChildren(renderMarkdown(value));
    else body.textContent = value;
    actions.hidden = value === "";
  };
  setText(text);
  return { element, setText };
}

/**
 * `‹ 2/3 ›` for a message with other versions (edits of a user message, regenerations of
 * a reply); an arrow asks `onVersion` for the version's seq, whose branch then shows.
 */
function versionSwitch(message, onVersion) {
  const seqs = message.sibling_seqs;
  const index = message.sibling_index;
  const arrow = (label, symbol, to) => {
    const button = h(
      "button",
      {
        type: "button",
        class: "version-arrow",
        "aria-label": label,
        disabled: !(to in seqs),
        "data-end": !(to in seqs),
      },
      symbol,
    );
    button.addEventListener("click", () => onVersion(seqs[to]));
    return button;
  };
  return h(
    "span",
    { class: "versions" },
    arrow("Previous version", "‹", index - 1),
    h("span", { class: "version-count" }, `${index + 1}/${seqs.length}`),
    arrow("Next version", "›", index + 1),
  );
}

/** A row of actions under a message of `role`: buttons `[label, onClick]`, its versions. */
function actionBar(role, buttons, versions = null) {
  const bar = h("div", { class: `message-actions ${role}` }, versions);
  for (const [label, onClick] of buttons) {
    const button = h("button", { type: "button", class: "message-action" }, label);
    button.addEventListener("click", onClick);
    bar.append(button);
  }
  return bar;
}

/** Turn a user message's bubble into a form that saves its new text as a new version. */
function editInPlace(element, message, onEdit) {
  const field = h("textarea", { class: "edit-text", rows: 3, "aria-label": "Edit message" });
  field.value = message.content;
  const save = h("button", { type: "submit" }, "Save");
  const cancel = h("button", { type: "button" }, "Cancel");
  const form = h("form", { class: "edit-form" }, field, h("div", {}, save, cancel));
  const shown = [...element.children];
  element.replaceChildren(form);
  element.classList.add("editing");
  const restore = () => {
    element.classList.remove("editing");
    element.replaceChildren(...shown);
  };
  cancel.addEventListener("click", restore);
  field.addEventListener("keydown", (event) => {
    if (event.key === "Escape") restore();
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      form.requestSubmit();
    }
  });
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    if (field.value.trim() === "") return;
    onEdit(message.seq, field.value);
  });
  field.focus();
}

function markBubble(element, mark) {
  element.dataset.mark = mark;
  element.querySelector(".text").after(h("span", { class: "mark" }, mark));
}

/**
 * A badge for one tool call. `call.arguments` is JSON text (stored) or a value (streamed);
 * undefined when the call is on a page not loaded. A call without a result is running.
 */
function toolBadge(call, expanded) {
  const status = h("span", { class: "tool-status" });
  const result = h("pre", { class: "tool-result" });
  const element = h(
    "details",
    { class: "tool", open: expanded.has(call.id) },
    h("summary", {}, h("span", { class: "tool-name" }, call.name), " ", status),
    h(
      "div",
      { class: "tool-body" },
      h("h4", {}, "Arguments"),
      h(
        "pre",
        { class: "tool-arguments" },
        call.arguments === undefined ? "(in earlier messages)" : pretty(call.arguments),
      ),
      h("h4", {}, "Result"),
      result,
    ),
  );
  // Re-rendering the thread (after a turn, or loading earlier messages) keeps badges open.
  element.addEventListener("toggle", () => {
    if (element.open) expanded.add(call.id);
    else expanded.delete(call.id);
  });
  const setResult = (value) => {
    // Tools report failure as a result with an `error`, not as an exception.
    const state = value === undefined ? "running" : value?.error !== undefined ? "error" : "ok";
    element.dataset.status = state;
    status.textContent = state;
    result.textContent = value === undefined ? "…" : pretty(value);
  };
  setResult(undefined);
  return { element, setResult };
}

function storedBadge(call, resultMessage, expanded) {
  const badge = toolBadge(call, expanded);
  // Every stored call has a result after it once its turn ends (the server guarantees it),
  // so a call without one is in a turn still running.
  if (resultMessage !== undefined) badge.setResult(parsed(resultMessage.content));
  return badge.element;
}

/**
 * Elements for stored messages, oldest first. Under a user message, its versions and
 * Edit; under a reply (what answers a user message), the reply's versions and Regenerate.
 */
function renderStored(messages, expanded, { onEdit, onRegenerate, onVersion }) {
  const results = new Map(
    messages.filter((m) => m.role === "tool").map((m) => [m.tool_call_id, m]),
  );
  const calls = new Set(messages.flatMap((m) => m.tool_calls.map((call) => call.id)));
  const elements = [];
  let question = null; // the user message the reply being rendered answers
  let reply = null; // that reply's first message, once there is one
  const endReply = () => {
    if (question === null || reply === null) return;
    const seq = question.seq;
    const versions = reply.sibling_count > 1 ? versionSwitch(reply, onVersion) : null;
    elements.push(actionBar("assistant", [["Regenerate", () => onRegenerate(seq)]], versions));
  };
  for (const message of messages) {
    // A stopped or failed reply says so, even when it had no text yet.
    const mark = message.metadata?.status ?? null;
    if (message.role === "user") {
      endReply();
      question = message;
      reply = null;
      const { element } = bubble("user", message.content);
      const versions = message.sibling_count > 1 ? versionSwitch(message, onVersion) : null;
      const edit = () => editInPlace(element, message, onEdit);
      elements.push(element, actionBar("user", [["Edit", edit]], versions));
      continue;
    }
    if (message.role !== "system") reply ??= message;
    if (message.role === "assistant") {
      if (message.tool_calls.length > 0) {
        const badges = message.tool_calls.map((call) =>
          storedBadge(call, results.get(call.id), expanded),
        );
        elements.push(h("div", { class: "tools" }, ...badges));
      }
      if (message.content || mark) {
        elements.push(bubble("assistant", message.content, mark).element);
      }
    } else if (message.role === "tool" && !calls.has(message.tool_call_id)) {
      // Its call is on the page before; "load earlier" pairs them up.
      const call = { id: message.tool_call_id, name: message.name, arguments: undefined };
      elements.push(h("div", { class: "tools" }, storedBadge(call, message, expanded)));
    }
  }
  endReply();
  return elements;
}

/**
 * A turn as it streams in: the user's message, then text and tool badges as they come. The
 * reply's markdown is rendered again as its text grows, at most once an animation frame.
 */
class LiveTurn {
  #thread;
  #elements = [];
  #badges = new Map();
  #current = null;
  #reply = null; // { bubble, text } of the reply being written
  #frame = null;

  /** `text` is the user's message; null for a turn followed after it started. */
  constructor(thread, text) {
    this.#thread = thread;
    if (text !== null) this.#add(bubble("user", text).element);
  }

  get elements() {
    return this.#elements;
  }

  #add(element) {
    this.#flush();
    this.#reply = null;
    this.#elements.push(element);
    this.#current = element;
    this.#thread.append(element);
  }

  delta(text) {
    if (this.#reply === null) {
      const reply = bubble("assistant", "");
      this.#add(reply.element);
      this.#current.classList.add("streaming");
      this.#reply = { bubble: reply, text: "" };
    }
    this.#reply.text += text;
    this.#frame ??= requestAnimationFrame(() => {
      this.#frame = null;
      this.#render();
    });
  }

  #render() {
    this.#reply?.bubble.setText(this.#reply.text);
    this.#thread.follow();
  }

  /** Show the reply's text as it stands now, not at the next frame. */
  #flush() {
    if (this.#frame === null) return;
    cancelAnimationFrame(this.#frame);
    this.#frame = null;
    this.#render();
  }

  toolCall(call) {
    if (!this.#current?.classList.contains("tools")) this.#add(h("div", { class: "tools" }));
    const badge = toolBadge(call, this.#thread.expanded);
    this.#badges.set(call.id, badge);
    this.#current.append(badge.element);
    this.#thread.follow();
  }

  toolResult({ id, result }) {
    this.#badges.get(id)?.setResult(result);
  }

  /** The turn is over; `mark` (stopped, failed, …) labels how the reply ended. */
  end(mark = null) {
    this.#flush();
    for (const element of this.#elements) element.classList.remove("streaming");
    if (mark === null) return;
    if (!this.#current.classList.contains("assistant")) this.#add(bubble("assistant", "").element);
    markBubble(this.#current, mark);
    this.#thread.follow();
  }

  /** The turn never started: the user's message is marked, as it is not stored. */
  refused(mark) {
    if (this.#elements.length > 0) markBubble(this.#elements[0], mark);
  }

  remove() {
    if (this.#frame !== null) cancelAnimationFrame(this.#frame);
    this.#frame = null;
    for (const element of this.#elements) element.remove();
    this.#thread.forget(this);
  }
}

export class Thread {
  #element;
  #onLoadEarlier;
  #live = null;
  /** Ids of the tool calls whose badges are open. */
  expanded = new Set();

  #actions;
  #busy = false;

  /** `actions`: `onEdit(seq, text)`, `onRegenerate(seq)`, `onVersion(seq)`. */
  constructor(element, { onLoadEarlier, ...actions }) {
    this.#element = element;
    this.#onLoadEarlier = onLoadEarlier;
    this.#actions = actions;
  }

  /** Show stored `messages` (oldest first); `keepPlace` holds the view on what was shown. */
  show(messages, { hasMore, keepPlace = false }) {
    const fromBottom = this.#element.scrollHeight - this.#element.scrollTop;
    // A turn streaming in stays below the history, whatever is loaded above it.
    this.#element.replaceChildren(
      ...renderStored(messages, this.expanded, this.#actions),
      ...(this.#live?.elements ?? []),
    );
    if (hasMore) {
      const earlier = h("button", { type: "button", class: "load-earlier" }, "Load earlier");
      earlier.addEventListener("click", async () => {
        earlier.disabled = true;
        await this.#onLoadEarlier();
        earlier.disabled = false;
      });
      this.#element.prepend(earlier);
    }
    if (messages.length === 0 && this.#live === null) {
      this.#element.append(h("p", { class: "empty" }, "Say hello, or ask to add a task."));
    }
    this.#disableActions();
    const { scrollHeight } = this.#element;
    this.#element.scrollTop = keepPlace ? scrollHeight - fromBottom : scrollHeight;
  }

  /**
   * While a turn runs, a message's actions (Edit, Save, Regenerate, the version arrows)
   * are disabled: the conversation takes no other turn, and the head does not move.
   */
  set busy(busy) {
    this.#busy = busy;
    this.#disableActions();
  }

  #disableActions() {
    const actions = this.#element.querySelectorAll(
      ".message-actions button, .edit-form button[type=submit]",
    );
    for (const button of actions) button.disabled = this.#busy || "end" in button.dataset;
  }

  /** An empty thread, for a new conversation. */
  clear() {
    this.#forgetAll();
    this.show([], { hasMore: false });
  }

  /** An empty thread while a conversation loads. */
  loading() {
    this.#forgetAll();
    this.#element.replaceChildren(h("p", { class: "empty" }, "Loading…"));
  }

  /**
   * Show `text` sent (null: a turn followed after it started), and return the turn to
   * show the reply in as it streams.
   */
  beginTurn(text) {
    this.#element.querySelector(".empty")?.remove();
    this.#live = new LiveTurn(this, text);
    this.#element.scrollTop = this.#element.scrollHeight;
    return this.#live;
  }

  #forgetAll() {
    this.#live = null;
    this.expanded.clear();
  }

  /** `turn` is no longer shown (the stored messages replace it, or it was abandoned). */
  forget(turn) {
    if (this.#live === turn) this.#live = null;
  }

  append(element) {
    const atBottom = this.#atBottom();
    this.#element.append(element);
    if (atBottom) this.#element.scrollTop = this.#element.scrollHeight;
  }

  /** Keep the newest text in view, unless the reader scrolled up to read something else. */
  follow() {
    if (this.#atBottom(AT_BOTTOM_PX * 4)) this.#element.scrollTop = this.#element.scrollHeight;
  }

  #atBottom(slack = AT_BOTTOM_PX) {
    const { scrollHeight, scrollTop, clientHeight } = this.#element;
    return scrollHeight - scrollTop - clientHeight <= slack;
  }
}
