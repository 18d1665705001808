"""What a worker holds, declared once: ``app.ctx`` is a ``WorkerState`` (the app factory makes
it; ``app.setup`` fills it as the worker starts). Every attribute below, its type and its
owner; an attribute is absent until its owner sets it (``hasattr`` says whether set-up ran)."""
import asyncio
from concurrent.futures import ThreadPoolExecutor

from .settings import Settings


class WorkerState:
    settings: Settings
    # The app factory (observability.install)
    metrics: object  # observability.Metrics, or absent with --no-metrics
    tracker: object  # observability.Tracker, None when nothing is tracked
    cors: object  # cors.Cors: every answer's CORS headers
    # app.setup: who this worker is, its pools and budgets
    worker: str  # "host@pid-app": unique, and says whether it lives (training.gone)
    budget: object  # protocol.Budget: request bodies held at once
    db: ThreadPoolExecutor  # one thread: the sample store's and the queue's calls
    decoders: ThreadPoolExecutor  # images, big answers, confusion matrices
    trainer: ThreadPoolExecutor  # reads the training processes' pipes
    large_answers: asyncio.Semaphore  # megabyte answers written at once
    stopping: object  # a multiprocessing Event: set at shutdown
    tasks: list  # background tasks: relay, keep-alive, follow, dispatch, expire, metrics
    # The stores (app.open_stores)
    store: object  # store.Store: nets, versions, locks, statuses
    samples: object  # samples.SampleStore, None when it cannot be opened
    jobs: object  # jobs.Jobs, None when it cannot be opened
    # The nets
    pretrained: dict  # version -> (manifest entry, net): the shipped models, read only
    best: object  # the best shipped version, None without any
    nets: object  # nets.Registry: the store's nets loaded here
    changes: set  # changes of a net under way (changes.outlive_request)
    # Training (training.py)
    running: set  # jobs this worker runs
    job_stops: set  # their stop events
    wake: asyncio.Event  # a job was queued, or a slot freed
    finished: dict  # job id -> its answer, for a request of this worker waiting for it
    job_ended: asyncio.Event  # set (and cleared) when a job here ends
    waiting: set  # /train requests waiting for their job
    streams: object  # streams.Streams: /train/events
    # Answers built once (routes/models.py, routes/insight.py; a store net's own are on it)
    hidden_cache: dict  # shipped model -> its /model/hidden answer
    hidden_tasks: dict  # builds under way
    held_out: object  # (version, the test images) for confusion matrices
    confusion: dict  # shipped model -> its confusion matrix
    insight_tasks: dict  # computations under way
    # Nets made per client address (routes/nets.py)
    created: dict
    # Drawings stored per client address: token buckets and hourly counts (routes/samples.py)
    posting: dict
    refused_connections: int  # protocol: connections closed at once past the cap
    # app.stop_cleanly: a SIGINT or SIGTERM that came while the process was starting
    stop_asked: object  # the signal's number, None when none came
    # app.watch_workers (the main process of --workers N): why it shut the server down
    ended: object  # None, or the reason (the process then exits 1)

    def __init__(self, settings):
        self.settings = settings
        self.stop_asked = self.ended = None
