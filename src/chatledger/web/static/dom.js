// Building elements from data. Children are appended as Text nodes and attributes set one
// by one, so text a user or the model wrote can never become markup.

/**
 * A new element: `h("li", { class: "task" }, "buy milk")`.
 * Attribute values of `true` set the attribute, `false` and null leave it out.
 */
export function h(tag, attributes = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === true) element.setAttribute(name, "");
    else if (value !== false && value != null) element.setAttribute(name, String(value));
  }
  element.append(...children.filter((child) => child != null && child !== false));
  return element;
}

/** The element with this id; the page's markup guarantees it exists. */
export const byId = (id) => document.getElementById(id);
