// The API client: bearer token from sessionStorage, JSON helpers and a fetch-based server-sent-events reader
// (EventSource cannot send an Authorization header).
const KEY = "zp.token";

export const session = {
  get token() { return sessionStorage.getItem(KEY); },
  set token(t) { t ? sessionStorage.setItem(KEY, t) : sessionStorage.removeItem(KEY); },
  me: null,
};

export class ApiError extends Error {
  constructor(status, message, body) { super(message); this.status = status; this.body = body; }
}

let onUnauthorized = () => {};
export function setUnauthorizedHandler(fn) { onUnauthorized = fn; }

export async function api(path, { method = "GET", body, signal, token } = {}) {
  const headers = { Accept: "application/json" };
  const t = token ?? session.token;
  if (t) headers.Authorization = `Bearer ${t}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const r = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), signal,
                                credentials: "omit", cache: "no-store" });
  const text = await r.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = text; }
  if (!r.ok) {
    const msg = (data && data.error) ? (typeof data.error === "string" ? data.error : JSON.stringify(data.error))
      : `${r.status} ${r.statusText}`;
    if (r.status === 401 && !token) onUnauthorized(msg);
    throw new ApiError(r.status, msg, data);
  }
  return data;
}

export const can = (role) => !!(session.me && session.me.can && session.me.can[role]);

// Follow a server-sent-events endpoint; calls onEvent({event, data, id}) per message. Reconnects from the last
// id (a byte offset) when the connection drops, until `end`/`timeout` arrives or the signal aborts.
export async function follow(path, onEvent, signal, { offsetParam = "offset" } = {}) {
  let offset = 0, retries = 0;
  while (!signal.aborted) {
    let ended = false;
    try {
      const sep = path.includes("?") ? "&" : "?";
      const r = await fetch(`${path}${sep}follow=true&${offsetParam}=${offset}`, {
        headers: { Authorization: `Bearer ${session.token}`, Accept: "text/event-stream" }, signal, cache: "no-store",
      });
      if (r.status === 401) { onUnauthorized("token rejected"); return; }
      if (!r.ok) throw new ApiError(r.status, `${r.status} ${r.statusText}`);
      const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
      let buf = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += value;
        let i;
        while ((i = buf.indexOf("\n\n")) >= 0) {
          const block = buf.slice(0, i);
          buf = buf.slice(i + 2);
          const msg = { event: "message", data: "", id: null };
          for (const line of block.split("\n")) {
            const c = line.indexOf(":");
            const field = c < 0 ? line : line.slice(0, c), val = c < 0 ? "" : line.slice(c + 1).replace(/^ /, "");
            if (field === "event") msg.event = val;
            else if (field === "data") msg.data += (msg.data ? "\n" : "") + val;
            else if (field === "id") msg.id = val;
          }
          if (msg.id !== null && /^\d+$/.test(msg.id)) offset = Number(msg.id);
          let data = msg.data;
          try { data = msg.data ? JSON.parse(msg.data) : null; } catch { /* plain text line */ }
          onEvent({ event: msg.event, data, id: msg.id });
          if (msg.event === "end" || msg.event === "timeout") ended = true;
        }
      }
      retries = 0;
    } catch (e) {
      if (signal.aborted) return;
      if (e instanceof ApiError && e.status >= 400 && e.status < 500) { onEvent({ event: "error", data: e.message }); return; }
      retries++;
    }
    if (ended) return;
    await new Promise((res) => setTimeout(res, Math.min(5000, 500 * 2 ** retries)));
  }
}
