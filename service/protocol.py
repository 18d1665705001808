"""HTTP plumbing under the routes: what one connection, and all of them together, may cost.

- A request's head must arrive whole within ``request_timeout`` of its first byte, and its
  body within ``request_timeout`` more (Sanic restarts its timer with every byte, so a client
  trickling a byte a second could hold a connection for hours).
- An answer that a client does not read for ``write_timeout`` seconds ends the connection, and
  large answers are written in chunks (``send_chunked``), so a client that reads nothing holds
  at most a chunk and the transport's buffer, not a copy of the whole answer.
- At most ``max_connections`` connections per worker: past it a new one is closed at once,
  long before the process runs out of file descriptors.
- At most ``max_buffered`` bytes of request bodies are held at once per worker, counted as they
  arrive and given back when the request is answered or its connection ends: a body that
  would go past it is refused with 503 and Retry-After, and the connection closed.
- Every header value of every answer is cleaned of CR, LF and NUL as Sanic cleans it, without
  its cost (``clean_header_value``).
"""
import asyncio
import logging
import weakref
from urllib.parse import quote_from_bytes

import sanic
from sanic.exceptions import BadRequest, RequestTimeout
from sanic.http import Stage
from sanic.response.types import HEADER_TRANSLATION_TABLE, BaseHTTPResponse
from sanic.server.protocols.http_protocol import HttpProtocol

from .errors import Busy, clip
from .logs import escape

log = logging.getLogger(__name__)
CHUNK = 256 * 1024  # bytes written at a time by send_chunked
SHOWN_URL = 200  # bytes of a URL that cannot be parsed kept for its error answer and log line
SAFE = "!#$&'()*+,/:;=?@[]~"  # what quote_from_bytes leaves of such a URL (and letters, digits)


def clean_header_value(value):
    """What Sanic's ``_sanitize_header_value`` answers (CR, LF and NUL removed: no header or
    answer can be smuggled into another), at a fraction of the cost. Sanic calls
    ``str.translate`` on every name and value of every answer, and CPython 3.11 raises and
    catches a KeyError inside it for each distinct character the table does not map: 26 of
    them for one X-Request-ID, 29,000 instructions of the 2.1 million a /predict costs
    (callgrind, docs/performance.md). The three searches below are memchr."""
    if '\r' in value or '\n' in value or '\0' in value:
        return value.translate(HEADER_TRANSLATION_TABLE)
    return value


def install_header_cleaner():
    """Sanic's answers clean their headers with clean_header_value (the same result; Sanic is
    pinned, and tests/test_server.py checks that CR, LF and NUL still never reach the
    client)."""
    BaseHTTPResponse._sanitize_header_value = staticmethod(clean_header_value)


class Protocol(HttpProtocol):

    def connection_made(self, transport):
        settings = self.app.ctx.settings
        if len(self.connections) >= settings.max_connections:
            ctx = self.app.ctx
            ctx.refused_connections = getattr(ctx, 'refused_connections', 0) + 1
            if ctx.refused_connections % 1000 == 1:
                log.warning('refusing connections: %d are open (--max-connections)',
                            len(self.connections))
            transport.abort()
            return
        super().connection_made(transport)

    def data_received(self, data):
        http, started = getattr(self, '_http', None), self._time
        super().data_received(data)
        if http is not None and http.stage is Stage.REQUEST:
            self._time = started

    def connection_lost(self, exc):
        request = getattr(getattr(self, '_http', None), 'request', None)
        if isinstance(request, Request):
            request.release_body()
        super().connection_lost(exc)

    async def send(self, data):
        if not self._can_write.is_set():  # the transport's buffer is full: a timer only then
            try:
                async with asyncio.timeout(self.app.ctx.settings.write_timeout):
                    await self._can_write.wait()
            except TimeoutError:
                log.info('closing a connection whose client read nothing for %s s',
                         self.app.ctx.settings.write_timeout)
                self.transport.abort()
        await super().send(data)


def shown_url(url_bytes):
    """A short prefix of a URL as text, every byte outside printable ASCII escaped."""
    return clip(escape(url_bytes[:SHOWN_URL].decode('ascii', 'backslashreplace')))


class Budget:
    """Bytes of request bodies held at once by this worker."""

    def __init__(self, limit):
        self.limit, self.used = limit, 0

    def take(self, size):
        if self.used + size > self.limit:
            return False
        self.used += size
        return True

    def give(self, size):
        self.used -= size


class Held:
    """What one request's body holds of the budget: taken as its bytes arrive, given back
    once (whichever comes first: the answer, an error or hang-up while reading, the
    connection's end, the request being freed)."""

    __slots__ = ('budget', 'size')

    def __init__(self, budget):
        self.budget, self.size = budget, 0

    def take(self, size):
        if not self.budget.take(size):
            return False
        self.size += size
        return True

    def give(self):
        size, self.size = self.size, 0
        self.budget.give(size)


class Request(sanic.Request):
    """A request whose body must arrive within request_timeout of its head, and fit in the
    worker's body budget: charged for the bytes that arrive (a body declared but never sent
    holds nothing), given back as soon as the request is answered or its connection ends.

    A URL httptools refuses (a control character in it) is a 400 that quotes a short, escaped
    prefix of it. Sanic (25.12) raises its own "Bad URL" with the whole URL, then builds the
    request its error answer needs from the same URL (``Http.create_empty_request``, method
    "NONE"), which fails again outside any handler: no answer, and a traceback with the URL
    four times. That request gets the URL percent-encoded instead (tests/test_attacks.py
    ``test_bad_urls_are_a_400_and_one_short_log_line`` fails first when this changes)."""

    def __init__(self, url_bytes, *args, **kwargs):
        try:
            super().__init__(url_bytes, *args, **kwargs)
        except BadRequest:
            if kwargs.get('method') != 'NONE':
                raise BadRequest(f'the URL {shown_url(url_bytes)} is not a valid HTTP target: '
                                 'expected a path like /predict, with control characters, '
                                 'spaces and other bytes outside printable ASCII '
                                 'percent-encoded (ESC as %1B).') from None
            try:
                super().__init__(quote_from_bytes(url_bytes[:SHOWN_URL], SAFE).encode(), *args,
                                 **kwargs)
            except BadRequest:
                super().__init__(b'/', *args, **kwargs)

    async def respond(self, response=None, *, status=200, headers=None, content_type=None):
        """Sanic's respond, then the CORS headers (service/cors.py), the request id in the
        answer and the metrics (observability.Tracker.finish): every answer, errors
        included, passes here."""
        self.release_body()
        response = await super().respond(response, status=status, headers=headers,
                                         content_type=content_type)
        ctx = self.app.ctx
        cors = getattr(ctx, 'cors', None)
        if cors is not None:
            cors.apply(self, response)
        tracker = getattr(ctx, 'tracker', None)
        if tracker is not None:
            tracker.finish(self, response)
        return response

    def release_body(self):
        held = self.__dict__.get('held')
        if held is not None:
            held.give()

    async def receive_body(self):
        if self.body:
            return
        settings = self.app.ctx.settings
        self.held = held = Held(self.app.ctx.budget)
        weakref.finalize(self, held.give)  # the last resort; held.give is idempotent
        chunks = []
        try:
            async with asyncio.timeout(settings.request_timeout):
                async for data in self.stream:
                    if not held.take(len(data)):
                        self.stream.request_body, self.stream.keep_alive = None, False
                        raise Busy(f'the server is receiving {settings.max_buffered} bytes of '
                                   'other requests right now; try again in a second.')
                    chunks.append(data)
        except TimeoutError:
            # Answer and hang up instead of reading the rest (Sanic would wait for it).
            held.give()
            self.stream.request_body, self.stream.keep_alive = None, False
            raise RequestTimeout() from None
        except BaseException:  # refused, or the client hung up (the task is cancelled)
            held.give()
            raise
        self.body = b''.join(chunks)


async def send_chunked(request, body, content_type, headers=None):
    """Answer ``body`` (bytes) in CHUNK-sized writes, each waiting for the client to read."""
    response = await request.respond(content_type=content_type,
                                     headers={**(headers or {}),
                                              'Content-Length': str(len(body))})
    view = memoryview(body)
    for start in range(0, len(body), CHUNK):
        await response.send(view[start:start + CHUNK])  # a view: no copy
    await response.eof()
