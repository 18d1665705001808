"""HTTP plumbing under the routes: what one connection, and all of them together, may cost.

- A request's head must arrive whole within ``request_timeout`` of its first byte, and its
  body within ``request_timeout`` more (Sanic restarts its timer with every byte, so a client
  trickling a byte a second could hold a connection for hours).
- An answer that a client does not read for ``write_timeout`` seconds ends the connection, and
  large answers are written in chunks (``send_chunked``), so a client that reads nothing holds
  at most a chunk and the transport's buffer, not a copy of the whole answer.
- At most ``max_connections`` connections per worker: past it a new one is closed at once,
  long before the process runs out of file descriptors.
- At most ``max_buffered`` bytes of request bodies are held at once per worker: a body that
  would go past it is refused with 503 and Retry-After before it is read.
- Every header value of every answer is cleaned of CR, LF and NUL as Sanic cleans it, without
  its cost (``clean_header_value``).
"""
import asyncio
import logging
import weakref

import sanic
from sanic.exceptions import RequestTimeout
from sanic.http import Stage
from sanic.response.types import HEADER_TRANSLATION_TABLE, BaseHTTPResponse
from sanic.server.protocols.http_protocol import HttpProtocol

from .errors import Busy

log = logging.getLogger(__name__)
CHUNK = 256 * 1024  # bytes written at a time by send_chunked


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

    async def send(self, data):
        try:
            async with asyncio.timeout(self.app.ctx.settings.write_timeout):
                await self._can_write.wait()
        except TimeoutError:
            log.info('closing a connection whose client read nothing for %s s',
                     self.app.ctx.settings.write_timeout)
            self.transport.abort()
        await super().send(data)


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


class Request(sanic.Request):
    """A request whose body must arrive within request_timeout of its head, and fit in the
    worker's body budget."""

    async def respond(self, response=None, *, status=200, headers=None, content_type=None):
        """Sanic's respond, then the request id in the answer and the metrics
        (observability.Tracker.finish): every answer, errors included, passes here."""
        response = await super().respond(response, status=status, headers=headers,
                                         content_type=content_type)
        tracker = getattr(self.app.ctx, 'tracker', None)
        if tracker is not None:
            tracker.finish(self, response)
        return response

    async def receive_body(self):
        settings = self.app.ctx.settings
        length = self.headers.get('content-length')
        size = int(length) if length and length.isdigit() else settings.max_body
        if 0 < size <= settings.max_body:  # larger ones are refused (413) unread
            if not self.app.ctx.budget.take(size):
                self.stream.request_body, self.stream.keep_alive = None, False
                raise Busy(f'the server is receiving {settings.max_buffered} bytes of other '
                           'requests right now; try again in a second.')
            # Given back when the request (and its body) is freed.
            weakref.finalize(self, self.app.ctx.budget.give, size)
        try:
            async with asyncio.timeout(settings.request_timeout):
                await super().receive_body()
        except TimeoutError:
            # Answer and hang up instead of reading the rest (Sanic would wait for it).
            self.stream.request_body, self.stream.keep_alive = None, False
            raise RequestTimeout() from None


async def send_chunked(request, body, content_type, headers=None):
    """Answer ``body`` (bytes) in CHUNK-sized writes, each waiting for the client to read."""
    response = await request.respond(content_type=content_type,
                                     headers={**(headers or {}),
                                              'Content-Length': str(len(body))})
    view = memoryview(body)
    for start in range(0, len(body), CHUNK):
        await response.send(view[start:start + CHUNK])  # a view: no copy
    await response.eof()
