"""Whether this worker can answer every route: the checks /health/ready and
/v2/health/ready answer with (their routes: routes/health.py, routes/inference.py)."""
from .errors import SanicException


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
        'live': ctx.nets.state() if hasattr(ctx, 'nets') else 'the live net is not loaded',
        'storage': ctx.store.writable() or 'ok',
        'samples': 'ok' if ctx.samples is not None else
        'the sample store cannot be opened (see the server log)',
    }
    if ctx.stopping.is_set():
        checks['stopping'] = 'the server is shutting down'
    return checks


def failing(checks):
    return {name: why for name, why in checks.items() if why != 'ok'}
