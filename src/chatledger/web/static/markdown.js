// Markdown in a model's reply, made into DOM nodes. The model's text is never trusted: it
// becomes Text nodes inside elements this module picks, never markup, so raw HTML in a reply
// shows as the text it is. Links go only to http(s) and mailto addresses; an image is never
// loaded (it shows as a link to its address). Every step is linear in the text, nesting
// deeper than MAX_DEPTH stays text, and children are appended one by one, never spread into
// one call's arguments, so no reply (a stored one may be 256 KiB) can hang or crash the page.
//
// Supported: headings, paragraphs (a newline is a line break), emphasis, strong, inline
// code, fenced code blocks, ordered and unordered lists, block quotes, horizontal rules,
// GFM pipe tables, links and autolinks. Not supported: raw HTML, reference links,
// indented code blocks, setext headings, entity references (shown as typed).

import { copyButton } from "./copy.js";
import { h } from "./dom.js";

const MAX_DEPTH = 12;
const MAX_EMPHASIS_DEPTH = 16;

const FENCE = /^ {0,3}(`{3,}|~{3,})(.*)$/;
const CLOSING_FENCE = /^ {0,3}(`{3,}|~{3,})[ \t]*$/;
const HEADING = /^ {0,3}(#{1,6})(?:[ \t]|$)/;
const RULE = /^ {0,3}(?:(?:\*[ \t]*){3,}|(?:-[ \t]*){3,}|(?:_[ \t]*){3,})$/;
const QUOTE = /^ {0,3}> ?/;
const ITEM = /^( {0,3})([-*+]|(\d{1,9})[.)])([ \t]+|$)/;
const DELIMITER_CELL = /^:?-+:?$/;
const AUTOLINK = /<([A-Za-z][A-Za-z0-9+.-]{1,31}:[^<>\x00-\x20]*)>/y;
const BARE_URL = /https?:\/\/[^\s<>]+/y;
const SAFE_URL = /^(?:https?:\/\/|mailto:)[^\s\x00-\x1f\x7f-\x9f]+$/i;
const SAFE_PROTOCOLS = new Set(["http:", "https:", "mailto:"]);
const PUNCTUATION = /[\p{P}\p{S}]/u;
const ESCAPABLE = /[!-/:-@[-`{-~]/;

/** `text` as markdown: a fragment to put in a message's element. */
export function renderMarkdown(text) {
  return element(null, {}, blocks(text.split(/\r\n?|\n/), 0));
}

/** `h(tag, attributes)` with `children` (an array of any length); a fragment for no tag. */
function element(tag, attributes, children) {
  const parent = tag === null ? document.createDocumentFragment() : h(tag, attributes);
  for (const child of children) parent.append(child);
  return parent;
}

/**
 * `raw` as an address a link may go to (http, https or mailto, written out with no space
 * or control character anywhere in it), or null. Nothing is decoded first: an entity or a
 * percent-encoded colon leaves no scheme, so the text stays text.
 */
export function safeUrl(raw) {
  if (!SAFE_URL.test(raw)) return null;
  try {
    const url = new URL(raw);
    return SAFE_PROTOCOLS.has(url.protocol) ? url.href : null;
  } catch {
    return null;
  }
}

// -- blocks ------------------------------------------------------------------------------

const isBlank = (line) => line.trim() === "";
const indentOf = (line) => line.length - line.trimStart().length;

function startsBlock(line, depth) {
  return (
    FENCE.test(line) ||
    HEADING.test(line) ||
    RULE.test(line) ||
    (depth < MAX_DEPTH && (QUOTE.test(line) || ITEM.test(line)))
  );
}

function blocks(lines, depth) {
  const nodes = [];
  let i = 0;
  while (i < lines.length) {
    const line = lines[i];
    let match;
    if (isBlank(line)) {
      i += 1;
    } else if ((match = FENCE.exec(line)) && !(match[1][0] === "`" && match[2].includes("`"))) {
      // An unclosed fence runs to the end, so a code block streaming in shows as one.
      const [, fence, info] = match;
      const indent = indentOf(line);
      const code = [];
      for (i += 1; i < lines.length; i += 1) {
        const closing = CLOSING_FENCE.exec(lines[i]);
        if (closing && closing[1][0] === fence[0] && closing[1].length >= fence.length) break;
        code.push(lines[i].slice(Math.min(indent, indentOf(lines[i]))));
      }
      i += 1;
      nodes.push(codeBlock(code.join("\n"), info.trim().split(/\s/)[0]));
    } else if ((match = HEADING.exec(line))) {
      i += 1;
      // A heading of the reply sits under the conversation's title (h2).
      const level = Math.min(match[1].length + 2, 6);
      nodes.push(element(`h${level}`, {}, inline(headingText(line.slice(match[0].length)))));
    } else if (RULE.test(line)) {
      i += 1;
      nodes.push(h("hr"));
    } else if (depth < MAX_DEPTH && QUOTE.test(line)) {
      const quoted = [];
      for (; i < lines.length && QUOTE.test(lines[i]); i += 1) {
        quoted.push(lines[i].replace(QUOTE, ""));
      }
      nodes.push(element("blockquote", {}, blocks(quoted, depth + 1)));
    } else if (depth < MAX_DEPTH && ITEM.test(line)) {
      i = list(lines, i, depth, nodes);
    } else if (isTableStart(lines, i)) {
      i = table(lines, i, nodes);
    } else {
      const paragraph = [line.trimStart()];
      for (i += 1; i < lines.length; i += 1) {
        if (isBlank(lines[i]) || startsBlock(lines[i], depth) || isTableStart(lines, i)) break;
        paragraph.push(lines[i].trimStart());
      }
      nodes.push(element("p", {}, inline(paragraph.join("\n"))));
    }
  }
  return nodes;
}

/** A heading's text without its closing sequence of #s. */
function headingText(text) {
  text = text.trim();
  let start = text.length;
  while (start > 0 && text[start - 1] === "#") start -= 1;
  if (start === 0) return "";
  const closes = start < text.length && (text[start - 1] === " " || text[start - 1] === "\t");
  return closes ? text.slice(0, start).trim() : text;
}

function codeBlock(code, language) {
  language = language.replace(/[^\w+#.-]/g, "").slice(0, 32);
  return h(
    "div",
    { class: "code-block" },
    h(
      "div",
      { class: "code-header" },
      h("span", { class: "code-language" }, language || "code"),
      copyButton(() => code, "Copy code"),
    ),
    h("pre", {}, h("code", { class: language ? `language-${language}` : null }, code)),
  );
}

function itemKind(match) {
  return match[2].slice(-1);
}

/** The list that starts at `lines[start]`, appended to `nodes`; returns the next line. */
function list(lines, start, depth, nodes) {
  const first = ITEM.exec(lines[start]);
  const kind = itemKind(first);
  const number = first[3] === undefined ? null : Number(first[3]);
  const items = h(number === null ? "ul" : "ol", { start: number > 1 ? number : null });
  let i = start;
  while (i < lines.length) {
    const match = ITEM.exec(lines[i]);
    if (!match || itemKind(match) !== kind) break;
    const indent = match[1].length;
    const contentOffset = match[4] === "" ? match[0].length + 1 : match[0].length;
    // Models indent a nested list by two spaces as often as by the marker's width.
    const continues = Math.min(contentOffset, indent + 2);
    const body = [lines[i].slice(match[0].length)];
    let loose = false;
    for (i += 1; i < lines.length; i += 1) {
      const next = lines[i];
      if (isBlank(next)) {
        let j = i;
        while (j < lines.length && isBlank(lines[j])) j += 1;
        if (j === lines.length || indentOf(lines[j]) < continues) break;
        loose = true;
        for (; i < j; i += 1) body.push(lines[i]);
        i -= 1;
      } else if (indentOf(next) >= continues) {
        body.push(next.slice(Math.min(indentOf(next), contentOffset)));
      } else if (!startsBlock(next, depth) && !isBlank(body.at(-1))) {
        body.push(next); // a lazy continuation of the item's paragraph
      } else {
        break;
      }
    }
    const children = blocks(body, depth + 1);
    // A tight item holds its text, not a paragraph of it.
    const content = loose
      ? children
      : children.flatMap((node) => (node.tagName === "P" ? [...node.childNodes] : [node]));
    items.append(element("li", {}, content));
    let j = i;
    while (j < lines.length && isBlank(lines[j])) j += 1;
    const again = j < lines.length && ITEM.exec(lines[j]);
    if (!again || itemKind(again) !== kind) break;
    i = j;
  }
  nodes.push(items);
  return i;
}

/** The cells of a table row; `\|` is a pipe inside a cell. */
function cells(line) {
  let row = line.trim();
  if (row.startsWith("|")) row = row.slice(1);
  if (row.endsWith("|") && !row.endsWith("\\|")) row = row.slice(0, -1);
  return row.split(/(?<!\\)\|/).map((cell) => cell.trim().replaceAll("\\|", "|"));
}

function isTableStart(lines, i) {
  if (i + 1 >= lines.length || !lines[i].includes("|") || !lines[i + 1].includes("-")) {
    return false;
  }
  const delimiters = cells(lines[i + 1]);
  return (
    delimiters.every((cell) => DELIMITER_CELL.test(cell)) &&
    delimiters.length === cells(lines[i]).length
  );
}

function alignment(cell) {
  if (cell.startsWith(":") && cell.endsWith(":")) return "align-center";
  if (cell.endsWith(":")) return "align-right";
  return cell.startsWith(":") ? "align-left" : null;
}

/** The table that starts at `lines[start]`, appended to `nodes`; returns the next line. */
function table(lines, start, nodes) {
  const header = cells(lines[start]);
  const aligns = cells(lines[start + 1]).map(alignment);
  const cell = (tag, align, value) => element(tag, { class: align }, inline(value ?? ""));
  const row = (values, tag) =>
    element("tr", {}, aligns.map((align, k) => cell(tag, align, values[k])));
  const body = [];
  let i = start + 2;
  for (; i < lines.length && !isBlank(lines[i]) && !startsBlock(lines[i], 0); i += 1) {
    body.push(row(cells(lines[i]), "td"));
  }
  // A wide table scrolls in its own box, never the page.
  nodes.push(
    h(
      "div",
      { class: "table-scroll" },
      h("table", {}, h("thead", {}, row(header, "th")), element("tbody", {}, body)),
    ),
  );
  return i;
}

// -- inline ------------------------------------------------------------------------------

const isSpace = (char) => char === undefined || /\s/.test(char);
const isPunctuation = (char) => char !== undefined && PUNCTUATION.test(char);

/** Where each `[` of `text` is closed (the index of its `]`), found in one pass. */
function matchBrackets(text) {
  const closes = new Map();
  const open = [];
  for (let i = 0; i < text.length; i += 1) {
    const char = text[i];
    if (char === "\\") i += 1;
    else if (char === "[") open.push(i);
    else if (char === "]" && open.length > 0) closes.set(open.pop(), i);
  }
  return closes;
}

/**
 * The destination and title of a link whose text ends at `close` (`](dest "title")`), and
 * the index after it; null when the text is not followed by one.
 */
function linkTail(text, close) {
  if (text[close + 1] !== "(") return null;
  let i = close + 2;
  const skipSpace = () => {
    while (text[i] === " " || text[i] === "\t" || text[i] === "\n") i += 1;
  };
  skipSpace();
  let destination = "";
  // Scanning stops at the first character a destination cannot hold, so a reply full of
  // broken links is still read in linear time.
  if (text[i] === "<") {
    let end = i + 1;
    while (end < text.length && !"<>\n".includes(text[end])) end += 1;
    if (text[end] !== ">") return null;
    destination = text.slice(i + 1, end);
    i = end + 1;
  } else {
    let parens = 0;
    for (; i < text.length; i += 1) {
      const char = text[i];
      if (char === "\\" && ESCAPABLE.test(text[i + 1] ?? "")) {
        destination += text[i + 1];
        i += 1;
      } else if (char === "(") {
        parens += 1;
        if (parens > 32) return null;
        destination += char;
      } else if (char === ")" && parens > 0) {
        parens -= 1;
        destination += char;
      } else if (char === ")" || char <= " ") {
        break;
      } else {
        destination += char;
      }
    }
  }
  const spaceAt = i;
  skipSpace();
  let title = null;
  const quote = { '"': '"', "'": "'", "(": ")" }[text[i]];
  if (quote !== undefined && i > spaceAt) {
    let end = i + 1;
    while (end < text.length && text[end] !== quote) end += text[end] === "\\" ? 2 : 1;
    if (end >= text.length) return null;
    title = text.slice(i + 1, end).replace(/\\([!-/:-@[-`{-~])/g, "$1");
    i = end + 1;
    skipSpace();
  }
  if (text[i] !== ")") return null;
  return { destination, title, end: i + 1 };
}

/** A bare address without the punctuation that ends the sentence it ends. */
function trimAddress(address) {
  let end = address.length;
  let unopened = 0;
  for (const char of address) unopened += char === ")" ? 1 : char === "(" ? -1 : 0;
  while (end > 0) {
    const char = address[end - 1];
    if (".,:;!?'\"*_~".includes(char)) end -= 1;
    else if (char === ")" && unopened > 0) {
      end -= 1;
      unopened -= 1;
    } else break;
  }
  return address.slice(0, end);
}

function link(href, title, ...children) {
  return h("a", { href, title, target: "_blank", rel: "noopener noreferrer" }, ...children);
}

const isDelimiter = (token) => typeof token === "object" && !(token instanceof Node);

function nodesOf(tokens) {
  return tokens.map((token) => {
    if (token instanceof Node) return token;
    const text = typeof token === "string" ? token : token.char.repeat(token.count);
    return document.createTextNode(text);
  });
}

/**
 * Emphasis delimiters `*` and `_`, matched as CommonMark does, into em and strong. Past
 * MAX_EMPHASIS_DEPTH levels of it the rest of the delimiters stay text.
 */
function emphasize(tokens) {
  const depths = new WeakMap();
  // Below bottom[key] no opener for such a closer exists: each is looked for once.
  const bottom = new Map();
  for (let c = 0; c < tokens.length; c += 1) {
    const closer = tokens[c];
    if (!isDelimiter(closer) || !closer.canClose) continue;
    const key = `${closer.char}${closer.canOpen}${closer.length % 3}`;
    while (closer.count > 0) {
      let o = c - 1;
      const floor = bottom.get(key) ?? -1;
      for (; o > floor; o -= 1) {
        const t = tokens[o];
        if (!isDelimiter(t) || t.char !== closer.char || !t.canOpen || t.count === 0) continue;
        const odd = (t.canClose || closer.canOpen) && (t.length + closer.length) % 3 === 0;
        if (!odd || (t.length % 3 === 0 && closer.length % 3 === 0)) break;
      }
      if (o <= floor) {
        bottom.set(key, c - 1);
        break;
      }
      const inner = tokens.slice(o + 1, c);
      const depth = 1 + inner.reduce((deepest, t) => Math.max(deepest, depths.get(t) ?? 0), 0);
      if (depth > MAX_EMPHASIS_DEPTH) return nodesOf(tokens);
      const opener = tokens[o];
      const use = opener.count >= 2 && closer.count >= 2 ? 2 : 1;
      opener.count -= use;
      closer.count -= use;
      const wrapped = element(use === 2 ? "strong" : "em", {}, nodesOf(inner));
      depths.set(wrapped, depth);
      tokens.splice(o + 1, c - o - 1, wrapped);
      c = o + 2;
      for (const [name, index] of bottom) if (index > o) bottom.set(name, o + 1);
    }
  }
  return nodesOf(tokens);
}

/** The nodes of inline markdown `text`; inside a link's text, `links` is false. */
function inline(text, links = true) {
  const tokens = [];
  let buffer = "";
  const flush = () => {
    if (buffer !== "") tokens.push(buffer);
    buffer = "";
  };
  const brackets = links ? matchBrackets(text) : new Map();
  // A run of n backticks with no closing run of n after it: never looked for twice.
  const unclosed = new Set();
  let i = 0;
  while (i < text.length) {
    const char = text[i];
    if (char === "\\" && ESCAPABLE.test(text[i + 1] ?? "")) {
      buffer += text[i + 1];
      i += 2;
    } else if (char === "\n") {
      flush();
      tokens.push(h("br"));
      i += 1;
    } else if (char === "`") {
      let n = 1;
      while (text[i + n] === "`") n += 1;
      const run = "`".repeat(n);
      let close = unclosed.has(n) ? -1 : text.indexOf(run, i + n);
      while (close !== -1 && text[close + n] === "`") {
        let after = close + n;
        while (text[after] === "`") after += 1;
        close = text.indexOf(run, after);
      }
      if (close === -1) {
        unclosed.add(n);
        buffer += run;
        i += n;
        continue;
      }
      let code = text.slice(i + n, close).replaceAll("\n", " ");
      if (code.length > 2 && code.startsWith(" ") && code.endsWith(" ") && code.trim() !== "") {
        code = code.slice(1, -1);
      }
      flush();
      tokens.push(h("code", {}, code));
      i = close + n;
    } else if (char === "<" && links) {
      AUTOLINK.lastIndex = i;
      const match = AUTOLINK.exec(text);
      const href = match && safeUrl(match[1]);
      if (href) {
        flush();
        tokens.push(link(href, null, match[1]));
        i += match[0].length;
      } else {
        buffer += match ? match[0] : char;
        i += match ? match[0].length : 1;
      }
    } else if (char === "h" && links && !/[\p{L}\p{N}]/u.test(text[i - 1] ?? "")) {
      BARE_URL.lastIndex = i;
      const match = BARE_URL.exec(text);
      const address = match ? trimAddress(match[0]) : "";
      const href = address && safeUrl(address);
      if (href) {
        flush();
        tokens.push(link(href, null, address));
        i += address.length;
      } else {
        buffer += match ? match[0] : char;
        i += match ? match[0].length : 1;
      }
    } else if ((char === "[" || (char === "!" && text[i + 1] === "[")) && links) {
      const open = char === "!" ? i + 1 : i;
      const close = brackets.get(open);
      const tail = close === undefined ? null : linkTail(text, close);
      if (tail === null) {
        buffer += text.slice(i, open + 1);
        i = open + 1;
        continue;
      }
      const label = text.slice(open + 1, close);
      const href = safeUrl(tail.destination);
      flush();
      if (href === null) {
        // Not a link: the whole of it shows as written.
        tokens.push(text.slice(i, tail.end));
      } else if (char === "!") {
        // Images are never loaded, which would tell their server who reads the reply.
        tokens.push(link(href, tail.title, label || tail.destination));
        tokens.at(-1).classList.add("image-link");
      } else {
        tokens.push(link(href, tail.title, element(null, {}, inline(label, false))));
      }
      i = tail.end;
    } else if (char === "*" || char === "_") {
      let n = 1;
      while (text[i + n] === char) n += 1;
      const before = text[i - 1];
      const after = text[i + n];
      const left =
        !isSpace(after) && (!isPunctuation(after) || isSpace(before) || isPunctuation(before));
      const right =
        !isSpace(before) && (!isPunctuation(before) || isSpace(after) || isPunctuation(after));
      const canOpen = char === "*" ? left : left && (!right || isPunctuation(before));
      const canClose = char === "*" ? right : right && (!left || isPunctuation(after));
      if (canOpen || canClose) {
        flush();
        tokens.push({ char, count: n, length: n, canOpen, canClose });
      } else {
        buffer += char.repeat(n);
      }
      i += n;
    } else {
      buffer += char;
      i += 1;
    }
  }
  flush();
  return emphasize(tokens);
}
