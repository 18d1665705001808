"""The HTTP service of better-tensorflow: a live MNIST net to ask, train and inspect.

    settings.py   every default, once          store.py     where runtime state lives (the seam)
    app.py        the app factory, listeners   nets.py      pretrained models, the live net
    routes/       blueprints per URL segment   training.py  jobs, progress, event streams
    guard.py      host, token, cross-site      trainer.py   the training process
    parsing.py    request bodies, messages     protocol.py  timeouts, connection and body caps
    errors.py     statuses, one JSON shape     openapi.py   the API's description
    samples.py    users' drawings (SQLite)     postgres.py  the same state in PostgreSQL
    observability.py  request ids, text/JSON logs, Prometheus metrics (routes/health.py,
                  routes/inference.py: readiness, /metrics, the Open Inference Protocol)
"""
import imaging  # noqa: F401  first: it sets OpenCV's pixel limit, read when cv2 is imported

from .app import create_app
from .settings import Settings

__all__ = ['Settings', 'create_app']
