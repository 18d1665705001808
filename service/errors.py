"""Errors are exceptions with a status, turned into one JSON shape for every route:
{"error": "<what was wrong and what is expected>", ...context}."""
import asyncio
import logging

from sanic import empty, json
from sanic.exceptions import (
    BadRequest,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    RequestTimeout,
    SanicException,
)
from sanic.handlers import ErrorHandler
from sanic.http import Http

log = logging.getLogger(__name__)


class Forbidden(SanicException):
    status_code = 403
    quiet = True


class Missing(SanicException):
    """A thing the URL names (a sample) does not exist; the message says which."""
    status_code = 404
    quiet = True


class Conflict(SanicException):
    status_code = 409
    quiet = True


class PayloadTooLargeImage(SanicException):
    status_code = 413
    quiet = True


class UnsupportedMediaType(SanicException):
    status_code = 415
    quiet = True


class Unprocessable(SanicException):
    status_code = 422
    quiet = True


class TooMany(SanicException):
    """One client asked for more than its share (429, with when to try again)."""
    status_code = 429
    quiet = True

    def __init__(self, message, retry_after=60):
        super().__init__(message, headers={'Retry-After': str(int(retry_after))})


class Busy(SanicException):
    """The server is at one of its limits for now; the client may retry."""
    status_code = 503
    quiet = True

    def __init__(self, message, retry_after=1):
        super().__init__(message, headers={'Retry-After': str(retry_after)})


class Unavailable(SanicException):
    """Something the request needs is missing (training data, pretrained models, storage);
    the message says how to provide it."""
    status_code = 503
    quiet = True


class InsufficientStorage(SanicException):
    status_code = 507
    quiet = True


__all__ = ['BadRequest', 'Busy', 'Conflict', 'Forbidden', 'InsufficientStorage', 'Missing',
           'JSONErrorHandler', 'NotFound', 'PayloadTooLargeImage', 'SanicException',
           'TooMany', 'Unavailable', 'UnsupportedMediaType', 'Unprocessable']


def clip(text, most=60):
    """At most ``most`` characters of what a client sent, for a message or a log line."""
    return text if len(text) <= most else text[:most] + '...'


class JSONErrorHandler(ErrorHandler):
    """Every error, ours or Sanic's, as {"error": message, ...context} with its status."""

    def log(self, request, exception):
        # The path only: a query string may hold the token.
        log.error('%s %s failed: %r', clip(request.method, 16), clip(request.path), exception,
                  exc_info=exception)

    def default(self, request, exception):
        if isinstance(exception, MethodNotAllowed) and request.method == 'OPTIONS':
            return empty()  # a CORS preflight: sanic-cors adds the Access-Control-* headers
        status = getattr(exception, 'status_code', 500)
        request.ctx.error = type(exception).__name__  # the metrics' reason
        if status >= 500 and not getattr(exception, 'quiet', False):
            self.log(request, exception)
        config = request.app.config
        if isinstance(exception, MethodNotAllowed):
            message = (f'{clip(request.method, 16)} is not allowed on {clip(request.path)}: '
                       f'use {exception.headers.get("Allow", "another method")}.')
        elif isinstance(exception, NotFound):
            message = f'nothing at {clip(request.path)}: the routes are listed at /openapi.json.'
        elif isinstance(exception, PayloadTooLarge) and str(exception).startswith('Request head'):
            # Sanic's words for a head past Http.HEADER_MAX_SIZE (its config, capped at 16 KiB)
            message = (f'the request\'s head (request line and headers) is larger than the limit '
                       f'of {Http.HEADER_MAX_SIZE} bytes; send shorter headers and cookies.')
        elif isinstance(exception, PayloadTooLarge):  # raised by Sanic while reading the body
            message = f'the request is larger than the limit of {config.REQUEST_MAX_SIZE} bytes.'
        elif isinstance(exception, RequestTimeout):  # a slow client
            message = f'the request did not arrive within {config.REQUEST_TIMEOUT} seconds.'
        elif isinstance(exception, SanicException):  # raised on purpose, with a message
            message = str(exception)
        else:
            message = 'internal server error (logged on the server).'
        body = {'error': message, **(getattr(exception, 'context', None) or {})}
        return json(body, status=status, headers=getattr(exception, 'headers', None))


async def store_call(work, *args, executor=None, full='nothing was changed.',
                     fault='{}; nothing was changed.'):
    """A blocking store call (``work(*args)``) in a thread of ``executor``; its StoreFull as
    507 ("<why>: ``full``") and its StoreError as 503 (``fault`` with the store's words)."""
    from .store import StoreError, StoreFull  # the stores know nothing of HTTP
    try:
        return await asyncio.get_running_loop().run_in_executor(executor, work, *args)
    except StoreFull as e:
        raise InsufficientStorage(f'{e.strerror}: {full}') from None
    except StoreError as e:
        log.warning('%s: %s', getattr(work, '__qualname__', work), e)
        raise Unavailable(fault.format(e.strerror)) from None
