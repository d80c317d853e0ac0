// Finding a stored message in the thread, to show a search hit where it was written: the
// message brought into view, the words the search matched marked in it.

import { h } from "./dom.js";

/**
 * The bubble that shows stored message `seq` of `messages` in `threadElement`, or null.
 * thread.js gives bubbles no seq; it draws one bubble per user message and one per
 * assistant message with text or a status mark (tool calls become badges), in order, so
 * the nth such message of a role is the nth bubble of that role. Keep the two in step.
 */
export function messageElement(threadElement, messages, seq) {
  const message = messages.find((m) => m.seq === seq);
  if (message?.role !== "user" && message?.role !== "assistant") return null;
  const drawn = messages.filter(
    (m) => m.role === message.role && (m.role === "user" || m.content || m.metadata?.status),
  );
  const index = drawn.indexOf(message);
  if (index < 0) return null;
  return threadElement.querySelectorAll(`.message.${message.role}`)[index] ?? null;
}

const escaped = (word) => word.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");

/** Wrap each occurrence of `words` in `element`'s text in a <mark>; the count marked. */
export function markWords(element, words) {
  // Longest first, so that a word is not cut short by another it begins with.
  const sorted = words.filter((word) => word !== "").sort((a, b) => b.length - a.length);
  if (sorted.length === 0) return 0;
  const pattern = new RegExp(sorted.map(escaped).join("|"), "giu");
  const walker = document.createTreeWalker(element, NodeFilter.SHOW_TEXT);
  const nodes = [];
  while (walker.nextNode()) nodes.push(walker.currentNode);
  let count = 0;
  for (const node of nodes) {
    const text = node.data;
    const parts = [];
    let at = 0;
    for (const match of text.matchAll(pattern)) {
      parts.push(text.slice(at, match.index), h("mark", { class: "found-word" }, match[0]));
      at = match.index + match[0].length;
      count += 1;
    }
    if (at === 0) continue;
    parts.push(text.slice(at));
    node.replaceWith(...parts.filter((part) => part !== ""));
  }
  return count;
}
