"""The OpenAPI 3 document of the service, assembled from the routes' own declarations
(``@documented`` beside each handler, service/declare.py): this module holds what is not one
route's, the document's head and the schemas several routes share. Every figure in it comes
from the server's settings; tests/test_server.py checks that its paths and methods are exactly
the app's routes."""
import re

from sanic.http import Http

from .declare import INT, NUMBER, Context, error, ref

_SECURITY_SCHEMES = {
    'bearer': {'type': 'http', 'scheme': 'bearer',
               'description': "the server's BTF_TOKEN (required only when it has one)"},
    'token': {'type': 'apiKey', 'in': 'query', 'name': 'token',
              'description': "the same token in the address, for a browser's GET"}}
_SHARED_SCHEMAS = {
    'Error': {'type': 'object', 'required': ['error'],
              'properties': {'error': {'type': 'string'}, 'status': ref('TrainStatus')}},
    'TrainStatus': {
        'type': 'object',
        'properties': {
            'running': {'type': 'boolean'}, 'epoch': INT, 'epochs': INT,
            'batch': INT, 'batches': INT,
            'history': {'type': 'array', 'items': {
                'type': 'object', 'properties': {
                    'epoch': INT, 'loss': NUMBER, 'val_accuracy': NUMBER,
                    'seconds': NUMBER}}}}},
}
_METHODS = ('get', 'post', 'delete')
_HEAD_TOO_LARGE = error(f'the request line and headers over {Http.HEADER_MAX_SIZE} bytes (a long '
                        'query string)')
# Sanic's "<name:type>" (or "<name>") in a route's path: OpenAPI's "{name}".
_PARAMETER = re.compile(r'<([^:>]+)[^>]*>')


def openapi_document(settings, versions, routes):
    """The document for a server with these ``settings``, pretrained ``versions`` and
    ``routes`` (``app.router.routes``). A route whose handler declares nothing is left out
    (the drift test names it)."""
    ctx = Context(settings, versions)
    paths = {}
    for route in routes:
        build = getattr(route.handler, 'openapi', None)
        if build is None:
            continue
        ctx.path = _PARAMETER.sub(r'{\1}', '/' + route.path.lstrip('/'))
        declared = build(ctx)
        methods = [m.lower() for m in route.methods if m.lower() in _METHODS]
        by_method = set(declared) <= set(_METHODS)
        operations = {m: declared[m] if by_method else declared for m in sorted(methods)}
        paths.setdefault(ctx.path, {}).update(  # any request can have too long a head
            {m: {**op, 'responses': {**op['responses'], '413': op['responses'].get(
                '413', _HEAD_TOO_LARGE)}} for m, op in operations.items()})
    return {
        'openapi': '3.0.3',
        'info': {'title': 'better-tensorflow', 'version': '1.0.0',
                 'description': 'An MNIST digit classifier to ask, train and inspect. Every '
                                'answer has CORS headers; every error is a 4xx JSON '
                                f'{{"error": "..."}}; bodies over {settings.max_body} bytes '
                                'get 413.'},
        'paths': dict(sorted(paths.items())),
        'components': {'securitySchemes': _SECURITY_SCHEMES,
                       'schemas': {**_SHARED_SCHEMAS, **dict(sorted(ctx.schemas.items()))}},
    }
