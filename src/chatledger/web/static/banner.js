// One error banner at the top of the page: the newest error replaces the one before.

import { byId } from "./dom.js";

const banner = byId("banner");
const message = byId("banner-message");
const retryButton = byId("banner-retry");
let retry = null;

retryButton.addEventListener("click", () => {
  const again = retry;
  hideBanner();
  again();
});
byId("banner-dismiss").addEventListener("click", hideBanner);

/** Show `text`; with a `retryWith` function, a Retry button runs it. */
export function showBanner(text, retryWith = null) {
  message.textContent = text;
  retry = retryWith;
  retryButton.hidden = retry === null;
  banner.hidden = false;
}

export function hideBanner() {
  banner.hidden = true;
  retry = null;
}
