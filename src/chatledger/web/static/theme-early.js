// The chosen theme on <html> before the first paint, so a dark page never flashes light.
// A classic script, not a module: modules run only after the document is parsed. theme.js
// is the toggle; both read the same localStorage key.
try {
  document.documentElement.dataset.theme = localStorage.getItem("chatledger.theme") || "system";
} catch {
  document.documentElement.dataset.theme = "system";
}
