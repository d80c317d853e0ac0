// Who is signed in, kept in localStorage: every tab of this origin shares it, and a sign-in
// or sign-out in one reaches the others through the `storage` event. Which conversation a
// tab shows is the tab's own (sessionStorage), so two tabs can follow two conversations.

const KEY = "chatledger.session";
const CONVERSATION_KEY = "chatledger.conversation";

/** `{ token, userId, conversationId }`, or null when nobody is signed in. */
export function loadSession() {
  try {
    const session = JSON.parse(localStorage.getItem(KEY));
    if (!session?.token || !session?.userId) return null;
    const { token, userId } = session;
    return { token, userId, conversationId: sessionStorage.getItem(CONVERSATION_KEY) };
  } catch {
    return null;
  }
}

/** Sign `session` in, in every tab. */
export function saveSession({ token, userId, conversationId = null }) {
  localStorage.setItem(KEY, JSON.stringify({ token, userId }));
  rememberConversation(conversationId);
}

/** The conversation this tab shows, to open again after a reload; null: a new one. */
export function rememberConversation(id) {
  if (id === null) sessionStorage.removeItem(CONVERSATION_KEY);
  else sessionStorage.setItem(CONVERSATION_KEY, id);
}

/** Sign out, in every tab. */
export function clearSession() {
  localStorage.removeItem(KEY);
  sessionStorage.removeItem(CONVERSATION_KEY);
}

/**
 * Run `onChange(session)` when another tab signs in (a session) or out (null). A tab's own
 * writes fire no `storage` event in it.
 */
export function watchSession(onChange) {
  window.addEventListener("storage", (event) => {
    // A null key: the other tab cleared the whole of localStorage.
    if (event.storageArea === localStorage && (event.key === KEY || event.key === null)) {
      onChange(loadSession());
    }
  });
}

/**
 * The subject (user id) of a JWT, read without checking the signature: the server checks
 * it on every request. Null when `token` is not a JWT with a subject.
 */
export function subjectOf(token) {
  const payload = token.split(".")[1];
  if (!payload) return null;
  try {
    const binary = atob(payload.replace(/-/g, "+").replace(/_/g, "/"));
    const bytes = Uint8Array.from(binary, (char) => char.charCodeAt(0));
    const subject = JSON.parse(new TextDecoder().decode(bytes)).sub;
    return typeof subject === "string" && subject !== "" ? subject : null;
  } catch {
    return null;
  }
}
