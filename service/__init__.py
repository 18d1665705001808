"""The HTTP service of better-tensorflow: a live MNIST net to ask, train and inspect.

    settings.py   every default, once          store.py     where runtime state lives (the seam)
    app.py        the app factory, listeners   nets.py      pretrained models, the live net
    routes/       blueprints per URL segment   training.py  jobs, progress, event streams
    guard.py      host, token, cross-site      trainer.py   the training process
    parsing.py    request bodies, messages     protocol.py  timeouts, connection and body caps
    errors.py     statuses, one JSON shape     openapi.py   the API's description, built
    declare.py    a route's description        from the routes' declarations
    samples.py    users' drawings (SQLite)     postgres.py  the same state in PostgreSQL
    observability.py  request ids, text/JSON logs, Prometheus metrics (routes/health.py,
                  routes/inference.py: readiness, /metrics, the Open Inference Protocol)
"""
__all__ = ['Settings', 'create_app']


def __getattr__(name):
    # The app is imported when asked for, not with the package: the training process imports
    # service.trainer, and must not load Sanic or OpenCV for it.
    if name == 'create_app':
        from .app import create_app
        return create_app
    if name == 'Settings':
        from .settings import Settings
        return Settings
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
