"""What the page does when the server holding its session stops: one replica of several behind a
load balancer (deploy/), or a host that restarted.

Gradio keeps a session (its Run, the tab on screen, every gr.State) in the server process. When
that process dies, Gradio's own page, at the first broken event stream, shows "Connection to the
server was lost. Attempting reconnection...", stops sending events, and reloads the page once a
server answers: behind a balancer that is another replica at once, and the reload throws away the
typed prompt, every setting and the tab. A replica that died while the page was idle is not
noticed at all, and the next Run then leaves the tab on screen undrawn (the new server takes the
first tab for the one on screen).

This script (the page's js, run as the page loads, before its load events) wraps ``window.fetch``
(Gradio's client calls it for every request):

- an event stream (``queue/data``) that breaks, ends early, or that the new server answers with
  "session not found" ends the events it carried as failed (no toast: the banner below explains)
  and closes as a finished stream does, so the page stays usable and keeps what it holds;
- it holds a stream of its own open to the session's server (Gradio's heartbeat route). When that
  stream or an event stream breaks, it asks the balancer which server answers now
  (``/gradio_api/app_id``, a number each process draws at start) and reopens its stream there. A
  new server: a banner at the bottom of the window says so and what to do (``MOVED``). The same
  server (a network blip): the banner says so only if an event was lost (``INTERRUPTED``). No
  server (all down): the banner says the page is retrying, every 2 s;
- once a Run finishes on the new server, the banner says so (``DONE``, for a few seconds), and the
  first tab and then the tab on screen are opened again: the new server then knows which tab is on
  screen and draws it from that Run (on a phone, whose tabs may sit in Gradio's "More tabs" menu, the
  page may stay on the first tab). After a blip the banner goes once any event finishes.
"""

from __future__ import annotations

import json

from components.share import OPEN_TAB_JS

# The banner's id (tests find it by this) and its texts; Markdown-free HTML of our own words only.
BANNER_ID = "explorer-reconnect"
MOVED = (
    "⚠️ The server this page was using has stopped, and the page is now connected to another one. "
    "Your prompt and settings are still here: press <b>Run</b> to trace your prompt again there; "
    "every tab then draws from that Run."
)
UNREACHABLE = "⚠️ The connection to the server was lost. Trying to reach it again…"
DONE = "✓ Your Run was traced on the new server; every tab draws from it."
INTERRUPTED = (
    "⚠️ The connection to the server broke before your last request finished. Your prompt and settings "
    "are still here: press <b>Run</b> (or the button you pressed) again."
)
DONE_SECONDS = 8
RETRY_MS = 2000  # between tries to reach a server while none answers
SETTLE_MS = 10_000  # at most this long for the first tab's open before the tab on screen is opened again

RECONNECT_JS = """
() => {
  if (window.__explorerReconnect) return;
  window.__explorerReconnect = true;
  const TEXT = TEXTS;
  const openTab = OPEN_TAB;
  const nativeFetch = window.fetch.bind(window);
  const encoder = new TextEncoder();
  const config = window.gradio_config || {};
  let appId = config.app_id;
  // The events that write a new Run's note: the Run and its variants (a token-id Run, a restored prompt).
  const note = (config.components || []).find((c) => c.props && c.props.elem_id === 'run-note');
  const runFns = new Set((config.dependencies || [])
    .filter((d) => note && (d.outputs || []).includes(note.id)).map((d) => d.id));
  const pending = new Map();  // event id -> fn index: joined, not yet completed
  const early = new Set();    // completed before their join's answer was read
  let joining = 0;            // joins sent and not answered yet
  let joins = 0;              // joins sent, ever
  let apiBase = null;         // ".../gradio_api", from the page's own requests
  let heartbeat = null;       // this page's own heartbeat stream (its session's), once a join names the session
  let recovering = null;
  let moved = false;          // on a new server, and no Run has finished there yet
  let broke = false;          // an event was ended by a broken stream, and none has finished since

  const sleep = (ms) => new Promise((done) => setTimeout(done, ms));
  const until = async (ready, ms) => {
    for (const end = Date.now() + ms; !ready() && Date.now() < end; ) await sleep(100);
  };
  const urlOf = (input) => new URL(input instanceof Request ? input.url : String(input), window.location.href);
  const signalOf = (input, init) => (init && init.signal) || (input instanceof Request ? input.signal : undefined);
  const sse = (message) => encoder.encode('data: ' + JSON.stringify(message) + '\\n\\n');
  const parse = (block) => {
    const data = block.split('\\n').filter((l) => l.startsWith('data:')).map((l) => l.slice(5).trim()).join('\\n');
    try { return data ? JSON.parse(data) : null; } catch (error) { return null; }
  };

  const banner = (html) => {
    let box = document.getElementById(TEXT.banner_id);
    if (!html) { if (box) box.remove(); return; }
    if (!box) {
      box = document.createElement('div');
      box.id = TEXT.banner_id;
      box.setAttribute('role', 'alert');
      // At the bottom of the window: in view wherever the page is scrolled, clear of Gradio's toasts.
      box.style.cssText = 'position:fixed;bottom:0;left:0;right:0;z-index:10000;padding:12px 48px 12px 16px;' +
        'background:#fff7ed;color:#7c2d12;border-top:2px solid #f97316;font-size:16px;line-height:1.4;' +
        'text-align:center;box-shadow:0 -2px 6px rgba(0,0,0,.15)';
      document.body.appendChild(box);
    }
    box.innerHTML = '<span></span><button type="button" aria-label="Close" style="position:absolute;' +
      'right:12px;top:8px;border:0;background:none;font-size:22px;cursor:pointer;color:inherit">×</button>';
    box.firstChild.innerHTML = html;  // our own sentences (TEXT), never text from the page or a server
    box.lastChild.onclick = () => box.remove();
  };

  // What the events of a broken stream get instead of their results (failed, without a toast: the
  // banner says what happened), then the end Gradio expects of a stream (it opens a new one for the
  // next event only after close_stream).
  const failures = () => {
    const ids = [...pending.keys()];
    pending.clear();
    broke = broke || ids.length > 0;
    const chunks = ids.map((id) => sse({
      msg: 'process_completed', event_id: id, success: false,
      output: { error: 'the connection to the server broke', visible: false },
    }));
    chunks.push(sse({ msg: 'close_stream' }));
    return chunks;
  };
  const interrupted = () => {
    lost();
    const chunks = failures();
    return new Response(new ReadableStream({ start(c) { chunks.forEach((x) => c.enqueue(x)); c.close(); } }),
      { status: 200, headers: { 'Content-Type': 'text/event-stream' } });
  };

  const completed = (message) => {
    const fn = pending.get(message.event_id);
    if (!pending.delete(message.event_id)) early.add(message.event_id);
    if (!message.success || recovering) return;
    if (moved && runFns.has(fn)) {
      moved = broke = false;
      banner(TEXT.done);
      retellTab();
      setTimeout(() => { if (!moved && !broke && !recovering) banner(null); }, TEXT.done_seconds * 1000);
    } else if (broke && !moved) {
      broke = false;
      banner(null);
    }
  };

  const watchEvents = (body, signal) => {
    const reader = body.getReader();
    const decoder = new TextDecoder();
    let text = '';
    const finish = (controller) => {
      lost();
      failures().forEach((x) => controller.enqueue(x));
      controller.close();
    };
    return new ReadableStream({
      // Reads until a whole message is passed on (or the stream ends): a pull that enqueues
      // nothing is not called again, and the page would wait for ever.
      async pull(controller) {
        for (let passed = 0; passed === 0; ) {
          let chunk;
          try {
            chunk = await reader.read();
          } catch (error) {
            if (signal && signal.aborted) { controller.error(error); return; }  // Gradio closed it
            finish(controller);
            return;
          }
          if (chunk.done) { finish(controller); return; }  // ended before close_stream
          text += decoder.decode(chunk.value, { stream: true });
          const blocks = text.split('\\n\\n');
          text = blocks.pop();
          for (const block of blocks) {
            const message = parse(block);
            // The stream's own end for all its events: "session not found" (a server that never
            // had this session) or "server stopped".
            if (message && message.msg === 'unexpected_error' && !message.event_id) {
              reader.cancel().catch(() => {});
              finish(controller);
              return;
            }
            if (message && message.msg === 'process_completed') completed(message);
            controller.enqueue(encoder.encode(block + '\\n\\n'));
            passed += 1;
            // The server's last message: the stream ends here, as a finished stream (Gradio aborts
            // it on reading this, and an abort that reached it still open would read as broken).
            if (message && message.msg === 'close_stream') {
              reader.cancel().catch(() => {});
              controller.close();
              return;
            }
          }
        }
      },
      cancel(reason) { return reader.cancel(reason); },
    });
  };

  // A stream to the session's server held open all the time (Gradio's heartbeat route: "ALIVE" every
  // 15 s), so a server that stops is noticed at once, while the page is idle too. Gradio holds one
  // of its own, opened before this script runs, so out of its reach.
  const watchServer = async () => {
    if (!heartbeat) return;
    try {
      const response = await nativeFetch(heartbeat, { cache: 'no-store', credentials: 'same-origin' });
      if (response.ok && response.body) {
        const reader = response.body.getReader();
        while (!(await reader.read()).done) { /* ALIVE */ }
      }
    } catch (error) { /* broken: below */ }
    lost();
  };

  // The new server holds this session afresh, with the first tab as the one on screen, so the Run
  // there draws the first tab. Once that Run is in, opening the first tab and then the one on screen
  // again tells it, and draws the tab on screen from the Run. (Done before the Run instead, the tab
  // drew "nothing yet" over its old figures, and Gradio then left its plots "processing" for good.)
  const retellTab = async () => {
    const tabs = [...document.querySelectorAll('[role="tab"]')];
    const selected = tabs.find((t) => t.getAttribute('aria-selected') === 'true');
    if (!tabs.length || selected === tabs[0]) return;
    const before = joins;
    tabs[0].click();
    await until(() => joins > before && joining === 0 && pending.size === 0, TEXT.settle_ms);
    if (selected) openTab(selected.textContent.trim());
  };

  // Which server answers now, through the balancer with this page's cookie: the one the session's
  // next request goes to.
  const lost = () => {
    if (recovering || !apiBase) return;
    recovering = (async () => {
      let answer = null;
      for (let attempt = 0; answer === null; attempt++) {
        await sleep(attempt ? TEXT.retry_ms : 300);
        try {
          const response = await nativeFetch(apiBase + '/app_id', { cache: 'no-store', credentials: 'same-origin' });
          if (response.ok) answer = (await response.json()).app_id;
        } catch (error) { /* nothing answers yet */ }
        if (answer === null && attempt === 1) banner(TEXT.unreachable);
      }
      if (answer !== appId) {
        appId = answer;
        moved = true;
        banner(TEXT.moved);
      } else {
        banner(moved ? TEXT.moved : broke ? TEXT.interrupted : null);
      }
    })().finally(() => { recovering = null; watchServer(); });
  };

  window.fetch = async (input, init) => {
    const url = urlOf(input);
    const at = url.pathname.indexOf('/gradio_api/');
    if (at < 0) return nativeFetch(input, init);
    apiBase = url.origin + url.pathname.slice(0, at) + '/gradio_api';
    const route = url.pathname.slice(at + '/gradio_api/'.length);
    const signal = signalOf(input, init);
    if (route === 'queue/join') {
      joins += 1;
      joining += 1;
      try {
        const response = await nativeFetch(input, init);  // a failure here is Gradio's to show
        if (response.ok) {
          let body = {};
          try { body = JSON.parse(init && typeof init.body === 'string' ? init.body : '{}'); } catch (e) {}
          const answer = await response.clone().json().catch(() => ({}));
          if (answer.event_id && !early.delete(answer.event_id)) pending.set(answer.event_id, body.fn_index);
          if (!heartbeat && body.session_hash) {
            heartbeat = apiBase + '/heartbeat/' + encodeURIComponent(body.session_hash);
            watchServer();
          }
        }
        return response;
      } finally {
        joining -= 1;
      }
    }
    if (route === 'queue/data') {
      let response;
      try {
        response = await nativeFetch(input, init);
      } catch (error) {
        if (signal && signal.aborted) throw error;
        return interrupted();
      }
      if (!response.ok || !response.body) return interrupted();
      return new Response(watchEvents(response.body, signal),
        { status: response.status, statusText: response.statusText, headers: response.headers });
    }
    return nativeFetch(input, init);
  };
}
"""

RECONNECT_JS = RECONNECT_JS.replace(
    "TEXTS",
    json.dumps(
        {
            "banner_id": BANNER_ID,
            "moved": MOVED,
            "unreachable": UNREACHABLE,
            "done": DONE,
            "interrupted": INTERRUPTED,
            "done_seconds": DONE_SECONDS,
            "retry_ms": RETRY_MS,
            "settle_ms": SETTLE_MS,
        },
        ensure_ascii=False,
    ),
).replace("OPEN_TAB", OPEN_TAB_JS.strip())


def page_script(*scripts: str) -> str:
    """One function for ``launch(js=...)`` (Gradio runs one) that runs each page script, each a
    ``() => {...}``, in order; this module's first, so its fetch wrapper sees the page's first event."""
    calls = "".join(f"({script.strip()})();\n" for script in (RECONNECT_JS, *scripts))
    return "() => {\n" + calls + "}"
