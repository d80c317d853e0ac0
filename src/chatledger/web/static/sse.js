// Server-sent events read from a fetch body. EventSource cannot send an Authorization
// header (nor POST), so the chat stream is parsed here, by the rules of the HTML standard.

/**
 * Yields `{ type, data, id }` for each event in `body`, a ReadableStream of bytes.
 * Comments (the server's keep-alive pings) are skipped; an event cut off by the end of the
 * stream is dropped, as the standard says.
 */
export async function* readEvents(body) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  let event = { type: "message", data: [], id: null };
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value;
      // Lines end in \r\n, \n or \r. A \r that ends the buffer may be the first half of a
      // \r\n split between two chunks, so it waits for the next one.
      const lines = buffer.split(/\r\n|\n|\r(?!$)/);
      buffer = lines.pop();
      for (const line of lines) {
        if (line === "") {
          if (event.data.length > 0) {
            yield { type: event.type, data: event.data.join("\n"), id: event.id };
          }
          event = { type: "message", data: [], id: event.id };
          continue;
        }
        if (line.startsWith(":")) continue;
        const colon = line.indexOf(":");
        const field = colon === -1 ? line : line.slice(0, colon);
        let text = colon === -1 ? "" : line.slice(colon + 1);
        if (text.startsWith(" ")) text = text.slice(1);
        if (field === "event") event.type = text;
        else if (field === "data") event.data.push(text);
        else if (field === "id") event.id = text;
      }
    }
  } finally {
    // Leaving early (an error, a stop, another conversation) also closes the connection.
    reader.cancel().catch(() => {});
  }
}
