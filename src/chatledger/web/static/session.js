// The signed-in user, kept in sessionStorage: it survives a reload but not the tab, and no
// other tab sees it.

const KEY = "chatledger.session";

/** `{ token, userId, conversationId }`, or null when nobody is signed in. */
export function loadSession() {
  try {
    const session = JSON.parse(sessionStorage.getItem(KEY));
    return session?.token && session?.userId ? session : null;
  } catch {
    return null;
  }
}

export function saveSession(session) {
  sessionStorage.setItem(KEY, JSON.stringify(session));
}

export function clearSession() {
  sessionStorage.removeItem(KEY);
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
