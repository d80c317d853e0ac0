// One small menu at a time, opened from a button (the ⋯ of a conversation row), usable from
// the keyboard: arrows move between its items, Enter or Space runs one, Escape closes it
// and Tab close it and give the focus back to the button.

import { h } from "./dom.js";

let open = null; // { button, element }

/** Close the open menu; `refocus` gives the focus back to the button that opened it. */
export function closeMenu({ refocus = false } = {}) {
  if (open === null) return;
  const { button, element } = open;
  open = null;
  element.remove();
  button.setAttribute("aria-expanded", "false");
  if (refocus) button.focus();
}

/**
 * Open a menu of `items` (`{ label, run, danger }`) under `button`, inside `button`'s parent,
 * focused on its first item. Opening it again from the same button closes it.
 */
export function openMenu(button, items) {
  const again = open?.button === button;
  closeMenu();
  if (again) return;
  const buttons = items.map(({ label, run, danger = false }) => {
    const item = h(
      "button",
      { type: "button", role: "menuitem", tabindex: "-1", class: danger ? "danger" : null },
      label,
    );
    item.addEventListener("click", () => {
      closeMenu({ refocus: true });
      run();
    });
    return item;
  });
  const element = h("div", { role: "menu", class: "row-menu" }, ...buttons);
  element.addEventListener("keydown", (event) => {
    const at = buttons.indexOf(document.activeElement);
    const move = { ArrowDown: 1, ArrowUp: -1 }[event.key];
    if (move !== undefined) {
      buttons[(at + move + buttons.length) % buttons.length].focus();
    } else if (event.key === "Home" || event.key === "End") {
      buttons.at(event.key === "Home" ? 0 : -1).focus();
    } else if (event.key === "Escape" || event.key === "Tab") {
      closeMenu({ refocus: true });
    } else {
      return;
    }
    // Handled here: not a shortcut of the page's too (Escape would stop a reply).
    event.preventDefault();
    event.stopPropagation();
  });
  button.after(element);
  button.setAttribute("aria-expanded", "true");
  open = { button, element };
  buttons[0].focus();
}

// A click anywhere but in the menu or on its button closes it.
document.addEventListener("pointerdown", (event) => {
  if (open && !open.element.contains(event.target) && !open.button.contains(event.target)) {
    closeMenu();
  }
});
