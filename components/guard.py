"""A thin layer in front of Gradio's HTTP routes (ASGI middleware; ``ExplorerBlocks.launch`` puts it
there): what one request may make the server read, store or start, and a 4xx where Gradio's own
routes would answer a client's mistake with a 500 or a cut connection.

- Bodies larger than ``Settings.max_request_bytes`` are refused (413) before anything reads them:
  Gradio keeps each session's last input even when the handler then refuses it.
- Only the POST routes the page and the API use are open; uploads, recordings, streamed inputs and
  the component server are closed (404): this app takes no files, so none can fill the disk.
- ``file=<url>`` would make the server fetch a public URL and stream it back: closed (403).
- An unknown endpoint or ``fn_index`` is a 404, an example index out of range a 422, a Range header
  other than one ``bytes=a-b`` with a <= b a 416.
- A session may have ``Settings.long_jobs_per_session`` long jobs (``LONG_JOBS`` lane) queued or
  running; one more is refused (429) before it is queued.
"""

from __future__ import annotations

import asyncio
import json
import re

from gradio.components import Dataset

from explorer.settings import Settings
from gpt2_max.scheduling import LONG_LANE

# The queue lane of long jobs (patching sweeps): its width is Settings.long_jobs_at_once.
LONG_JOBS = LONG_LANE  # the lane whose events the per-session limit counts

# The POST routes this app serves: joining the queue, the named API routes, the page's unqueued
# events (run/predict with a fn_index), cancelling, resetting and closing an event's stream.
OPEN_POSTS = re.compile(
    r"^/gradio_api/(queue/join|call/(v2/)?[^/]+|run/[^/]+|api/[^/]+|cancel|reset|stream/[^/]+/close)/?$"
)
# Routes whose body names an event (queue/join by its fn_index), with the api name in the path.
EVENT_ROUTES = re.compile(r"^/gradio_api/(?:queue/join|(?:call(?:/v2)?|run|api)/(?P<name>[^/]+))/?$")
SINGLE_RANGE = re.compile(r"^bytes=(?P<start>\d+)-(?P<end>\d*)$")


class RequestGuard:
    """ASGI middleware around Gradio's app (reads ``scope["app"].get_blocks()`` for the events)."""

    def __init__(self, app, settings: Settings) -> None:
        self.app = app
        self.settings = settings
        # Long jobs are checked and queued one join at a time, so two joins of one session sent
        # together cannot both pass the per-session count before either is queued.
        self._long_join = asyncio.Lock()

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path, method = scope["path"], scope["method"]
        refusal = self.refuse_headers(path, method, scope)
        if refusal:
            await answer(send, *refusal)
            return
        if method not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        body = await read_body(receive, self.settings.max_request_bytes)
        if body is None:
            await answer(send, 413, f"request body over {self.settings.max_request_bytes:,} bytes")
            return
        replay = replay_receive(body, receive)
        route = EVENT_ROUTES.match(path)
        if route is None:
            await self.app(scope, replay, send)
            return
        blocks = scope["app"].get_blocks()
        fn, refusal = find_event(blocks, route.group("name"), body)
        if refusal:
            await answer(send, *refusal)
            return
        if fn.concurrency_id != LONG_JOBS:
            await self.app(scope, replay, send)
            return
        async with self._long_join:
            session = parse_json(body).get("session_hash")
            if session and long_jobs_of(blocks, session) >= self.settings.long_jobs_per_session:
                await answer(send, 429, "this session's earlier sweep is still queued or running; wait for it")
                return
            await self.app(scope, replay, send)

    def refuse_headers(self, path: str, method: str, scope) -> tuple[int, str] | None:
        """What the path, method and headers alone refuse: (status, why), or None."""
        if method == "POST" and not OPEN_POSTS.match(path):
            return 404, "this app takes no uploads and serves no such route"
        if method in ("PUT", "PATCH", "DELETE"):
            return 405, f"{method} is not served"
        if path.startswith("/gradio_api/file=") and path[len("/gradio_api/file=") :].lower().startswith(
            ("http:", "https:")
        ):
            return 403, "this app fetches no URLs"
        headers = dict(scope["headers"])
        declared = headers.get(b"content-length", b"").strip()
        if declared.isdigit() and int(declared) > self.settings.max_request_bytes:
            return 413, f"request body over {self.settings.max_request_bytes:,} bytes"
        requested = headers.get(b"range")
        if requested is not None:
            single = SINGLE_RANGE.match(requested.decode("latin-1").strip())
            if single is None or (single["end"] and int(single["end"]) < int(single["start"])):
                return 416, "one byte range (bytes=a-b, a <= b) per request"
        return None


def find_event(blocks, api_name: str | None, body: bytes):
    """-> (the event a body names, None) or (None, (status, why)) for an unknown one or an
    example index out of range. Bodies that are not JSON objects go on to Gradio (its 4xx)."""
    data = parse_json(body)
    fn_index = data.get("fn_index")
    if isinstance(fn_index, int) and not isinstance(fn_index, bool):
        fn = blocks.fns.get(fn_index)
    elif api_name is not None:
        fn = next((f for f in blocks.fns.values() if f.api_name == api_name), None)
    else:
        return None, (422, "fn_index must be a whole number")
    if fn is None:
        return None, (404, "no such endpoint")
    values = data.get("data")
    if isinstance(values, list):
        for block, value in zip(fn.inputs, values):
            if isinstance(block, Dataset) and not valid_index(value, len(block.raw_samples)):
                return None, (422, f"example index must be a whole number in 0..{len(block.raw_samples) - 1}")
    return fn, None


def valid_index(value, count: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < count


def long_jobs_of(blocks, session_hash: str) -> int:
    """How many long jobs of a session Gradio's queue holds, waiting or running."""
    queue = blocks._queue
    lane = queue.event_queue_per_concurrency_id.get(LONG_JOBS)
    waiting = list(lane.queue) if lane is not None else []
    running = [event for job in queue.active_jobs if job for event in job]
    return sum(
        1 for event in waiting + running if event.session_hash == session_hash and event.fn.concurrency_id == LONG_JOBS
    )


def parse_json(body: bytes) -> dict:
    try:
        data = json.loads(body or b"{}")
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


async def read_body(receive, limit: int) -> bytes | None:
    """The whole request body, or None once it passes ``limit`` bytes (the rest is not read)."""
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def replay_receive(body: bytes, receive):
    """A receive() that hands the app the body already read, then what the client sends next."""
    sent = False

    async def replay():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


async def answer(send, status: int, why: str) -> None:
    body = json.dumps({"detail": why}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})
