// Copy buttons: a message's raw text, or a code block's code, to the clipboard.

import { h } from "./dom.js";

const SHOW_STATE_MS = 1500;

/**
 * Put `text` on the clipboard; true when it got there. The Clipboard API exists only in
 * secure contexts (https, localhost): a server reached over plain http at a LAN address
 * is not one, and there a selected textarea and the older copy command still work.
 */
async function copyText(text) {
  try {
    await navigator.clipboard.writeText(text);
    return true;
  } catch {
    // No Clipboard API, or the browser refused it: try the older way.
  }
  const buffer = h("textarea", { class: "copy-buffer", readonly: true, "aria-hidden": "true" });
  buffer.value = text;
  document.body.append(buffer);
  buffer.select();
  let copied = false;
  try {
    copied = document.execCommand("copy");
  } catch {
    copied = false;
  }
  buffer.remove();
  return copied;
}

/**
 * A button that copies `text()` (read when clicked, so a reply still streaming in is
 * copied as it stands). Its label is drawn by the style sheet from `data-state`, so it
 * adds nothing to the text of the message it is in.
 */
export function copyButton(text, label) {
  const button = h("button", { type: "button", class: "copy", "aria-label": label, title: label });
  let timer = null;
  button.addEventListener("click", async () => {
    button.dataset.state = (await copyText(text())) ? "copied" : "failed";
    clearTimeout(timer);
    timer = setTimeout(() => delete button.dataset.state, SHOW_STATE_MS);
  });
  return button;
}
