"""For orchestrators and monitoring: liveness, readiness (/health/live, /health/ready) and the
Prometheus metrics (/metrics). /health itself stays in pages.py, as it always answered."""
import asyncio

from sanic import Blueprint, json, raw
from sanic.exceptions import Unauthorized

from ..errors import NotFound, SanicException
from ..guard import token_given
from ..nets import live_state

bp = Blueprint('health')
PROMETHEUS_TEXT = 'text/plain; version=0.0.4; charset=utf-8'


class NotReady(SanicException):
    status_code = 503
    quiet = True


def readiness(app):
    """{check: 'ok' or why not}: what this worker needs to answer every route."""
    ctx = app.ctx
    if not hasattr(ctx, 'store'):  # before set-up finished
        return {'started': 'the server is starting'}
    checks = {
        'pretrained': 'ok' if ctx.pretrained else
        'no pretrained models (`make models` builds them)',
        'live': live_state(app),
        'storage': ctx.store.writable() or 'ok',
        'samples': 'ok' if ctx.samples is not None else
        'the sample store cannot be opened (see the server log)',
    }
    if ctx.stopping.is_set():
        checks['stopping'] = 'the server is shutting down'
    return checks


def failing(checks):
    return {name: why for name, why in checks.items() if why != 'ok'}


@bp.route('/health/live', methods=['GET', 'HEAD'])  # HEAD: load balancers' checks
async def live(request):
    return json({'status': 'ok'})


@bp.route('/health/ready', methods=['GET', 'HEAD'])  # HEAD: load balancers' checks
async def ready(request):
    """200 when every check passes, else 503 naming the failing ones. The storage check
    touches the store: off the event loop."""
    app = request.app
    checks = await asyncio.get_running_loop().run_in_executor(
        app.ctx.decoders, readiness, app) if hasattr(app.ctx, 'decoders') else readiness(app)
    bad = failing(checks)
    if bad:
        raise NotReady('not ready: ' + '; '.join(f'{k}: {v}' for k, v in bad.items()),
                       context={'checks': checks})
    return json({'status': 'ready', 'checks': checks})


def check_metrics_token(request):
    """/metrics needs --metrics-token (BTF_METRICS_TOKEN) when one is set, else the server's
    token when it has one; open otherwise."""
    settings = request.app.ctx.settings
    token = settings.metrics_token or settings.token
    if token is None:
        return
    given = token_given(request, token)
    if given is not True:
        which = 'metrics token (BTF_METRICS_TOKEN)' if settings.metrics_token else \
            "server's token"
        raise Unauthorized(f'/metrics needs the {which} ({given}): send '
                           '"Authorization: Bearer <token>".', scheme='Bearer',
                           realm='better-tensorflow')


@bp.get('/metrics')
async def metrics(request):
    app = request.app
    check_metrics_token(request)
    if getattr(app.ctx, 'metrics', None) is None:
        raise NotFound('metrics are off on this server (started with --no-metrics).')
    # Reading every worker's files: off the event loop.
    body = await asyncio.get_running_loop().run_in_executor(
        app.ctx.decoders, app.ctx.metrics.exposition)
    return raw(body, content_type=PROMETHEUS_TEXT)
