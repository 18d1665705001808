"""The drawing page, its files, liveness and the API's description."""
import re

from sanic import Blueprint, file, html, json

from ..errors import NotFound
from ..openapi import openapi_document

bp = Blueprint('pages')
_STATIC_NAME = re.compile(r'[A-Za-z0-9_-][A-Za-z0-9._-]{0,99}')

PLACEHOLDER = """<!doctype html><meta charset="utf-8"><title>better-tensorflow</title>
<h1>better-tensorflow</h1><p>The drawing page is not installed yet (static/index.html).
The API answers at <a href="/openapi.json">/openapi.json</a>.</p>"""


@bp.route('/', methods=['GET', 'HEAD'])
async def index(request):
    page = request.app.ctx.settings.static_dir / 'index.html'
    return await file(page) if page.is_file() else html(PLACEHOLDER)


@bp.get('/static/<name:path>', name='static')
async def static(request, name):
    """A plain file directly in static/: no folders, no hidden files, no way out."""
    folder = request.app.ctx.settings.static_dir
    path = folder / name
    if not _STATIC_NAME.fullmatch(name) or not path.is_file() or path.is_symlink():
        raise NotFound(f'nothing at {request.path}')
    return await file(path)


@bp.route('/health', methods=['GET', 'HEAD'])  # HEAD: load balancers' checks
async def health(request):
    return json({'status': 'ok'})


@bp.get('/openapi.json')
async def openapi(request):
    ctx = request.app.ctx
    return json(openapi_document(ctx.settings, sorted(ctx.pretrained)))
