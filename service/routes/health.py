"""For orchestrators and monitoring: liveness, readiness (/health/live, /health/ready) and the
Prometheus metrics (/metrics). /health itself stays in pages.py, as it always answered."""
import asyncio

from sanic import Blueprint, json, raw
from sanic.exceptions import Unauthorized

from ..declare import TOKEN_SECURITY, answer, documented, error
from ..errors import NotFound, Unavailable
from ..guard import token_given
from ..readiness import NotReady, failing, readiness

bp = Blueprint('health')
PROMETHEUS_TEXT = 'text/plain; version=0.0.4; charset=utf-8'


@bp.route('/health/live', methods=['GET', 'HEAD'])  # HEAD: load balancers' checks
@documented(lambda ctx: {'summary': 'liveness: the process serves',
                         'responses': {'200': answer({'type': 'object'})}})
async def live(request):
    return json({'status': 'ok'})


@bp.route('/health/ready', methods=['GET', 'HEAD'])  # HEAD: load balancers' checks
@documented(lambda ctx: {
    'summary': 'readiness: pretrained models and the live net loaded, state writable, sample '
               'store open',
    'responses': {'200': answer({'type': 'object', 'properties': {
        'status': {'type': 'string', 'enum': ['ready']},
        'checks': {'type': 'object', 'additionalProperties': {'type': 'string'},
                   'description': 'each check: "ok" or why not (pretrained, live, storage, '
                                  'samples; stopping while the server shuts down)'}}}),
        '503': error('not ready: the failing checks')}})
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


def metrics_operation(ctx):
    settings = ctx.settings
    operation = {
        'summary': 'Prometheus metrics, summed over every worker (text format 0.0.4)',
        'responses': {'200': {'description': 'the metrics',
                              'content': {'text/plain': {'schema': {'type': 'string'}}}},
                      '404': error('metrics are off (--no-metrics)'),
                      '503': error("this worker's metrics files could not be made (a full "
                                   'disk)')}}
    if settings.metrics_token is not None or settings.token is not None:
        operation['security'] = TOKEN_SECURITY
        operation['responses']['401'] = error('no token, or a wrong one (BTF_METRICS_TOKEN, '
                                              'else BTF_TOKEN)')
    return operation


@bp.get('/metrics')
@documented(metrics_operation)
async def metrics(request):
    app = request.app
    check_metrics_token(request)
    if getattr(app.ctx, 'metrics', None) is None:
        if app.ctx.settings.metrics:
            raise Unavailable('metrics are off in this worker: their files could not be made '
                              '(a full disk? see the log); everything else is served.')
        raise NotFound('metrics are off on this server (started with --no-metrics).')
    # Reading every worker's files: off the event loop.
    body = await asyncio.get_running_loop().run_in_executor(
        app.ctx.decoders, app.ctx.metrics.exposition)
    return raw(body, content_type=PROMETHEUS_TEXT)
