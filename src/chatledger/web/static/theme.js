// The theme toggle: system (follow prefers-color-scheme), light, dark. The choice is set as
// data-theme on <html>, which the stylesheets honour, and remembered in localStorage, so
// every tab and the next visit use it too. theme-early.js applies it before the first paint.

import { byId } from "./dom.js";

const KEY = "chatledger.theme";
const THEMES = ["system", "light", "dark"];
const LABELS = { system: "◐", light: "☀", dark: "☾" };

const toggle = byId("theme");

function stored() {
  try {
    const theme = localStorage.getItem(KEY);
    return THEMES.includes(theme) ? theme : "system";
  } catch {
    return "system";
  }
}

function apply(theme) {
  document.documentElement.dataset.theme = theme;
  const name = `Theme: ${theme}`;
  toggle.textContent = LABELS[theme];
  toggle.setAttribute("aria-label", name);
  toggle.title = `${name} (click for ${THEMES[(THEMES.indexOf(theme) + 1) % THEMES.length]})`;
}

toggle.addEventListener("click", () => {
  const current = document.documentElement.dataset.theme;
  const theme = THEMES[(THEMES.indexOf(current) + 1) % THEMES.length];
  apply(theme);
  try {
    localStorage.setItem(KEY, theme);
  } catch {
    // Storage refused (a private window's quota, a policy): the choice lasts this page.
  }
});

// Another tab's choice applies here too.
window.addEventListener("storage", (event) => {
  if (event.key === KEY || event.key === null) apply(stored());
});

apply(stored());
