"""The drawing page, its files, liveness and the API's description."""
import re

from sanic import Blueprint, file, html, json

from ..declare import answer, documented, error
from ..errors import NotFound
from ..openapi import openapi_document

bp = Blueprint('pages')
_STATIC_NAME = re.compile(r'[A-Za-z0-9_-][A-Za-z0-9._-]{0,99}')

PLACEHOLDER = """<!doctype html><meta charset="utf-8"><title>better-tensorflow</title>
<h1>better-tensorflow</h1><p>The drawing page is not installed yet (static/index.html).
The API answers at <a href="/openapi.json">/openapi.json</a>.</p>"""


@bp.route('/', methods=['GET', 'HEAD'])
@documented(lambda ctx: {'summary': 'the drawing page', 'responses': {
    '200': {'description': 'HTML', 'content': {'text/html': {}}}}})
async def index(request):
    page = request.app.ctx.settings.static_dir / 'index.html'
    return await file(page) if page.is_file() else html(PLACEHOLDER)


@bp.get('/static/<path:path>', name='static')
@documented(lambda ctx: {
    'summary': "the drawing page's files",
    'parameters': [{'name': 'path', 'in': 'path', 'required': True,
                    'schema': {'type': 'string'}}],
    'responses': {'200': {'description': 'the file'}, '404': error('no such file')}})
async def static(request, path):
    """A plain file directly in static/: no folders, no hidden files, no way out."""
    found = request.app.ctx.settings.static_dir / path
    if not _STATIC_NAME.fullmatch(path) or not found.is_file() or found.is_symlink():
        raise NotFound(f'nothing at {request.path}')
    return await file(found)


@bp.route('/health', methods=['GET', 'HEAD'])  # HEAD: load balancers' checks
@documented(lambda ctx: {'summary': 'liveness', 'responses': {'200': answer(
    {'type': 'object', 'required': ['status'],
     'properties': {'status': {'type': 'string', 'enum': ['ok']}}})}})
async def health(request):
    return json({'status': 'ok'})


@bp.get('/openapi.json')
@documented(lambda ctx: {'summary': 'this document',
                         'responses': {'200': answer({'type': 'object'})}})
async def openapi(request):
    app = request.app
    return json(openapi_document(app.ctx.settings, sorted(app.ctx.pretrained),
                                 app.router.routes))
