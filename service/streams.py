"""/train/events: every net's training progress as server-sent events, in every worker.

Each stream follows one net. An event is encoded once and queued for each stream of its net;
an idle stream costs a queue and a waiting task, nothing more; a stream whose client stopped
reading is ended rather than buffered for. The worker running a net's job sends its events
directly and publishes the job's status in the store; ``relay`` replays other workers' (and,
with PostgreSQL, other servers') published status to this worker's streams.
"""
import asyncio
import json
import logging

from .errors import Busy
from .store import LIVE

log = logging.getLogger(__name__)


def sse(event, payload):
    return f'event: {event}\ndata: {json.dumps(payload)}\n\n'


class Streams:
    """This worker's open /train/events streams, by the net each follows."""

    QUEUE = 64  # events a slow client may fall behind by before its stream ends

    def __init__(self, limit):
        self.limit, self.queues = limit, {}  # queue -> the net's name

    def open(self, net=LIVE):
        if len(self.queues) >= self.limit:
            raise Busy(f'{len(self.queues)} event streams are open on this server, the most '
                       'it keeps (--max-streams); poll /train/status instead, or try again '
                       'later.', retry_after=5)
        queue = asyncio.Queue(self.QUEUE)
        self.queues[queue] = net
        return queue

    def close(self, queue):
        self.queues.pop(queue, None)

    def nets(self):
        """The names of the nets some stream follows."""
        return set(self.queues.values())

    def send(self, net, event, payload):
        self.send_text(sse(event, payload), net)

    def send_text(self, text, net=None):
        """To the streams of ``net`` (of every net when None)."""
        for queue, followed in list(self.queues.items()):
            if net is not None and followed != net:
                continue
            if queue.full():  # stalled: end it
                while not queue.empty():
                    queue.get_nowait()
                queue.put_nowait(None)
            else:
                queue.put_nowait(text)

    def end(self):
        self.send_text(None)


async def keep_alive(app):
    """One comment on every stream every ``keep_alive`` seconds (proxies close silent ones)."""
    while True:
        await asyncio.sleep(app.ctx.settings.keep_alive)
        app.ctx.streams.send_text(': keep-alive\n\n')


def replay(streams, net, seen, state):
    """Send what another worker's job on ``net`` did between two reads of its status."""
    if seen is None or seen['job'] != state['job']:
        seen = {'status': {'history': [], 'epoch': 0, 'batch': 0}, 'done': None}
    old, new = seen['status'], state['status']
    if new.get('state') == 'queued' and (old.get('state'), old.get('position')) != (
            'queued', new.get('position')):
        streams.send(net, 'queued', {'position': new.get('position')})
    if new.get('before') is not None and old.get('before') is None:
        streams.send(net, 'before', new['before'])
    view = new.get('view') or {}
    for record in new['history'][len(old['history']):]:
        # the last epoch's confusion matrix and pictures are in the status; earlier ones
        # (several epochs between two reads) are gone
        shown = view if view.get('epoch') == record['epoch'] else {}
        streams.send(net, 'epoch', {**record, 'epochs': new['epochs'], **shown})
    if new['running'] and (new['epoch'], new['batch']) != (old['epoch'], old['batch']):
        streams.send(net, 'progress', {k: new[k] for k in ('epoch', 'epochs', 'batch',
                                                           'batches')})
    if state['done'] is not None and seen['done'] is None:
        streams.send(net, 'done', state['done'])


def orphaned(app, net, state):
    """Whether ``state`` is another worker's job on ``net`` that ended without a word: it is
    running and has no answer, yet nobody holds the net's job lock (its worker was killed)."""
    return (state is not None and state.get('worker') != app.ctx.worker and
            state.get('done') is None and state['status'].get('running') and
            not app.ctx.store.locked(net))


async def queued_or_running(app, net):
    """Whether the training queue holds a job of the net (one whose runner died is run again
    or ended by it: its streams wait for that)."""
    from .training import in_queue
    try:
        return await in_queue(app, 'active', net) is not None
    except Exception:  # the queue is away: what the status says stands
        return False


async def relay(app):
    """Forward other workers' training events to this worker's streams: one version check
    of each followed net's status every ``progress_interval``. A job whose worker died ends
    them with an error."""
    ctx = app.ctx
    store, interval = ctx.store, ctx.settings.progress_interval
    followed = {}  # net -> (status version, last state seen)
    while True:
        await asyncio.sleep(interval)
        nets = ctx.streams.nets() | {LIVE}
        for gone in set(followed) - nets:
            del followed[gone]
        for net in nets:
            try:
                if net not in followed:
                    followed[net] = store.status_version(net), store.read_status(net)
                    continue
                version, seen = followed[net]
                if store.status_version(net) == version:
                    if net in ctx.streams.nets() and orphaned(app, net, seen) and \
                            not await queued_or_running(app, net):
                        log.warning('a training of net %s ended unfinished: its worker died',
                                    net)
                        seen = {**seen, 'done': {'error': 'the training stopped: the server '
                                                 'process running it ended. The net is its '
                                                 'last saved version.'}}
                        ctx.streams.send(net, 'done', seen['done'])
                        followed[net] = version, seen
                    continue
                version, state = store.status_version(net), store.read_status(net)
                if state is not None and state.get('worker') != ctx.worker:
                    replay(ctx.streams, net, seen, state)
                followed[net] = version, state
            except (KeyError, TypeError, ValueError) as e:
                log.warning('ignoring a malformed training status of net %s (%s)', net, e)
                followed[net] = store.status_version(net), None
