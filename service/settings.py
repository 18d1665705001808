"""Every default of the service, defined once: a frozen dataclass built from the command line
and the environment (``server.py``) or from keyword arguments (tests, ``create_app``)."""
import ipaddress
import os
from dataclasses import dataclass, field, fields, replace
from functools import cached_property
from pathlib import Path

import preprocess

ROOT = Path(__file__).resolve().parent.parent
LOOPBACK_NAMES = ('localhost', '127.0.0.1', '::1')


def usable_cpus():
    """CPUs this process may run on: its affinity, capped by a cgroup v2 quota (a container's
    --cpus), not os.cpu_count()."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    try:
        quota, period = Path('/sys/fs/cgroup/cpu.max').read_text().split()[:2]
        if quota != 'max':
            cpus = min(cpus, max(1, int(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, cpus)


def is_loopback(host):
    """Whether ``host`` (an address or a name to listen on) is reachable from this machine only."""
    if host in ('localhost', ''):
        return host == 'localhost'
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class HostNames(frozenset):
    """The Host names a server answers to. Off loopback it answers any IP address too: DNS
    rebinding needs a name of the attacker's (a browser sends the name it looked up as the
    Host), so an address typed in the address bar cannot be one."""

    def __new__(cls, names, ip_addresses=False):
        hosts = super().__new__(cls, names)
        hosts.ip_addresses = ip_addresses
        return hosts

    def __contains__(self, name):
        if super().__contains__(name):
            return True
        if not self.ip_addresses:
            return False
        try:
            ipaddress.ip_address(name)
        except ValueError:
            return False
        return True

    def __str__(self):
        names = str(sorted(self))
        return f'{names} and any IP address' if self.ip_addresses else names


@dataclass(frozen=True)
class Settings:
    # Where things are
    models_dir: Path = ROOT / 'models'          # shipped pretrained models, read only
    state_dir: Path = ROOT / 'data' / 'state'   # the live net, its lock and training status
    database: str | None = None  # postgresql://...: the state in PostgreSQL instead
    data_path: Path = preprocess.DEFAULT_OUTPUT  # the training file /train reads
    static_dir: Path = ROOT / 'static'
    # Listening
    host: str = '127.0.0.1'
    port: int = 8000
    workers: int = 1
    # The net /reset builds, and what /train may do
    default_sizes: tuple = (784, 30, 10)
    default_learning_rate: float = 0.5
    default_batch_size: int = 128
    max_epochs: int = 100
    score_samples: int = 100  # validation samples behind /train's "accuracy" (the original's)
    # Access
    token: str | None = None  # required by the routes that change state (BTF_TOKEN)
    cors_origins: tuple | str = '*'  # '*' or the origins that may call cross-origin
    allowed_hosts: tuple | None = None  # Host names answered besides loopback names (and any
    #                                     IP address when not listening on loopback), or '*'
    # Limits: what one client, or all of them at once, may cost
    max_body: int = 16 * 2 ** 20  # bytes; a base64 4096x4096 PNG canvas fits
    max_buffered: int = 64 * 2 ** 20  # bytes of request bodies held at once, per worker
    max_json_values: int = 2000  # brackets and commas in a body: bounds the parse's cost
    max_connections: int = 1000  # open connections per worker
    max_streams: int = 100  # open /train/events streams per worker
    max_large_answers: int = 4  # megabyte answers (/model/hidden) written at once per worker
    request_timeout: float = 30.0  # seconds for a request's head, and again for its body
    write_timeout: float = 30.0  # seconds an answer may wait for a client that reads nothing
    keep_alive_timeout: float = 30.0  # seconds an idle keep-alive connection stays open
    train_timeout: float = 3600.0  # seconds a /train request may wait for its job
    decoders: int = field(default_factory=usable_cpus)  # images decoded at once
    inline_text: int = 64 * 1024  # base64 characters decoded on the loop to read the size
    # Users' samples
    max_samples: int = 100_000  # stored samples (507 past it)
    max_sample_bytes: int = 64 * 1024  # an image kept as a sample, as submitted
    sample_share: float = 0.1  # of every batch of the live net's training with samples
    hold_suspect: bool = True  # drawings judged mislabelled wait for a review (judge.py)
    sample_rate: float = 50.0  # drawings one client address may store per second per worker
    sample_burst: int = 500  # ... and at once (a token bucket: routes/samples.py)
    samples_per_hour: int = 20_000  # ... and in an hour; the token holder is exempt
    # The gate a training passes before it goes live (service/gate.py, docs/models.md): the
    # most it may lose, in points, on MNIST's test images and on the held-out drawings
    gate_test_points: float = 0.3  # the shared net: overall on MNIST's test images
    gate_class_points: float = 1.0  # the shared net: any one digit of them
    gate_samples_points: float = 1.0  # the shared net: the held-out drawings (at least 1)
    gate_private_test_points: float = 1.0  # a private net: overall on MNIST's test images
    gate_private_drawings: int = 0  # a private net: its owner's held-out drawings read worse
    # Nets: the shared one and private ones (routes/nets.py), their versions, the queue
    max_nets: int = 1000  # private nets on the server (507 past it)
    nets_per_hour: int = 200  # private nets one client address may create in an hour (429)
    max_versions: int = 10  # versions kept per net, the oldest pruned (never the current)
    net_idle_days: float = 30.0  # a private net unused this long is deleted
    net_memory: int = 512 * 2 ** 20  # bytes of weights of loaded nets; least recently used
    #                                  private ones unloaded past it (reloaded when used)
    max_trainings: int = field(default_factory=lambda: max(1, usable_cpus() - 1))  # at once;
    #                                              0: none here (other servers run the queue)
    max_queued: int = 100  # trainings waiting in the queue (503 past it)
    # A learner's own net (service/playground.py): its shape, and a net brought in
    max_hidden_layers: int = 4  # hidden layers of a fresh net (POST /nets "sizes")
    max_units: int = 2048  # units per hidden layer
    max_import_bytes: int = 16 * 2 ** 20  # an NPZ body of POST /nets/import (and --max-body)
    max_training_work: int = 100 * 636_010  # weight-epochs one /train may ask for: what 100
    #                                         epochs of the best model (784-800-10) are
    # Training progress
    progress_interval: float = 0.1  # seconds between "progress" events
    keep_alive: float = 15.0  # seconds between SSE keep-alive comments
    train_niceness: int = 10  # the training process yields the CPU to requests
    # Operations (docs/operations.md)
    metrics: bool = True  # /metrics in Prometheus text format, request metrics kept
    metrics_token: str | None = None  # guards /metrics (BTF_METRICS_TOKEN); else the token
    metrics_interval: float = 0.2  # seconds between writes of a worker's counts to the metrics
    request_ids: bool = True  # X-Request-ID accepted or made, echoed, on every log line
    access_log: bool = False  # one log line per request (route, status, duration)
    log_format: str = 'text'  # 'text' or 'json' (one JSON object per line)
    graceful_timeout: float = 15.0  # seconds open requests get to finish at SIGTERM

    def __post_init__(self):
        for name in ('models_dir', 'state_dir', 'data_path', 'static_dir'):
            object.__setattr__(self, name, Path(getattr(self, name)))
        object.__setattr__(self, 'default_sizes', tuple(self.default_sizes))
        for name in ('max_epochs', 'score_samples', 'max_body', 'max_buffered',
                     'max_json_values', 'max_connections', 'max_streams', 'decoders', 'workers',
                     'max_samples', 'max_sample_bytes', 'max_large_answers', 'max_nets',
                     'nets_per_hour', 'max_versions', 'net_memory', 'max_queued',
                     'sample_burst', 'samples_per_hour', 'max_hidden_layers', 'max_units',
                     'max_import_bytes', 'max_training_work'):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f'{name} must be a positive int, got {value!r}.')
        if not isinstance(self.max_trainings, int) or isinstance(self.max_trainings, bool) or \
                self.max_trainings < 0:
            raise ValueError(f'max_trainings must be an int, 0 or more (0: this server runs no '
                             f'training, others on its database do), got {self.max_trainings!r}.')
        for name in ('request_timeout', 'write_timeout', 'keep_alive_timeout', 'train_timeout',
                     'graceful_timeout', 'metrics_interval', 'net_idle_days'):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
                raise ValueError(f'{name} must be a positive number of seconds, got {value!r}.')
        if not isinstance(self.sample_rate, (int, float)) or isinstance(self.sample_rate, bool) \
                or not self.sample_rate > 0:
            raise ValueError(f'sample_rate must be a positive number of drawings per second, '
                             f'got {self.sample_rate!r}.')
        if not isinstance(self.hold_suspect, bool):
            raise ValueError(f'hold_suspect must be true or false, got {self.hold_suspect!r}.')
        for name in ('gate_test_points', 'gate_class_points', 'gate_samples_points',
                     'gate_private_test_points'):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or \
                    not 0 <= value <= 100:
                raise ValueError(f'{name} must be a number of points from 0 to 100, got '
                                 f'{value!r}.')
        if not isinstance(self.gate_private_drawings, int) or \
                isinstance(self.gate_private_drawings, bool) or self.gate_private_drawings < 0:
            raise ValueError(f'gate_private_drawings must be an int, 0 or more, got '
                             f'{self.gate_private_drawings!r}.')
        if not isinstance(self.sample_share, (int, float)) or not 0 < self.sample_share < 1:
            raise ValueError(f'sample_share must be a fraction between 0 and 1, got '
                             f'{self.sample_share!r}.')
        origins = self.cors_origins
        if isinstance(origins, list):
            origins = tuple(origins)
            object.__setattr__(self, 'cors_origins', origins)
        if origins != '*' and (not isinstance(origins, tuple) or not origins
                               or not all(isinstance(o, str) for o in origins)):
            raise ValueError(f"cors_origins must be '*' or a list of origins, got {origins!r}.")
        if self.token is not None and (not isinstance(self.token, str) or not self.token.strip()):
            raise ValueError('token must be a non-empty string or None; an empty BTF_TOKEN '
                             'would leave the state-changing routes open.')
        if self.log_format not in ('text', 'json'):
            raise ValueError(f"log_format must be 'text' or 'json', got {self.log_format!r}.")
        if self.metrics_token is not None and (not isinstance(self.metrics_token, str)
                                               or not self.metrics_token.strip()):
            raise ValueError('metrics_token must be a non-empty string or None.')
        if self.database is not None and not str(self.database).startswith(
                ('postgresql://', 'postgres://')):
            raise ValueError('database must be a postgresql:// URL, got '
                             f'{str(self.database).split("@")[-1][:60]!r}.')
        if self.allowed_hosts is not None:
            if isinstance(self.allowed_hosts, str) or not all(
                    isinstance(h, str) for h in self.allowed_hosts):
                raise ValueError('allowed_hosts must be a list of host names or None, got '
                                 f'{self.allowed_hosts!r}.')
            object.__setattr__(self, 'allowed_hosts',
                               tuple(h.strip().lower() for h in self.allowed_hosts))
        if self.hosts is None and self.token is None:
            raise ValueError(
                "allowed_hosts '*' answers any Host name, and without a token a page on any "
                'site could then use this server through DNS rebinding (its own name made to '
                "resolve to this server's address), in the browser of anyone who can reach "
                'it. Set a token (BTF_TOKEN), or list the names it answers to '
                '(--allowed-hosts / BTF_ALLOWED_HOSTS, e.g. digits.example.org).')

    @cached_property
    def hosts(self):
        """The Host names this server answers to (a HostNames), None for any."""
        if self.allowed_hosts is not None and '*' in self.allowed_hosts:
            return None
        return HostNames(LOOPBACK_NAMES + (self.allowed_hosts or ()),
                         ip_addresses=not is_loopback(self.host))

    @property
    def public(self):
        """What the page and the OpenAPI document need to know (served by /models)."""
        return {'default_net': {'sizes': list(self.default_sizes),
                                'learning_rate': self.default_learning_rate,
                                'batch_size': self.default_batch_size},
                'max_epochs': self.max_epochs, 'score_samples': self.score_samples,
                'max_body': self.max_body, 'max_samples': self.max_samples,
                'max_sample_bytes': self.max_sample_bytes, 'sample_share': self.sample_share}

    def but(self, **changes):
        return replace(self, **changes)

    @classmethod
    def names(cls):
        return [f.name for f in fields(cls)]
