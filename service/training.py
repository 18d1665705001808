"""Training jobs and their progress, for every worker.

One job at a time across every worker (the store's lock) trains a copy of the live net in a
process of its own (``trainer.train``: no GIL shared with the event loop), which sends its
progress and then the trained net back through a pipe; predictions keep using the last
complete net until the trained one is saved and swapped in. The job's worker publishes its
status in the store; the other workers relay it to their event streams.
"""
import asyncio
import functools
import json
import logging
import multiprocessing
import signal
import time
import zipfile

import numpy as np

import better_tensorflow as btf

from . import observability, trainer
from .errors import BadRequest, Busy, Conflict, SanicException, Unavailable
from .nets import behind, make_live, newest_live
from .samples import is_validation
from .store import StoreError

log = logging.getLogger(__name__)
SPAWN = multiprocessing.get_context('spawn')  # a fresh interpreter: no copy of our threads


class Job:
    """Progress of the current (or last) training job, as /train/status shows it. Only the
    event loop changes it."""

    def __init__(self, epochs=0, batches=0, start=0, name=''):
        self.name = name  # unique across workers
        self.running = epochs > 0
        self.epochs, self.batches = epochs, batches
        self.start = start  # epochs the net had before this job
        self.epoch, self.batch = min(epochs, 1), 0
        self.history = []
        self.before = self.after = None  # validation figures before and after the job
        self.last_progress = 0.0

    def progress(self):
        return {'epoch': self.epoch, 'epochs': self.epochs, 'batch': self.batch,
                'batches': self.batches}

    def status(self):
        figures = {} if self.before is None else {'before': self.before, 'after': self.after}
        return {'running': self.running, **self.progress(), 'history': list(self.history),
                **figures}


def sse(event, payload):
    return f'event: {event}\ndata: {json.dumps(payload)}\n\n'


class Streams:
    """This worker's open /train/events streams. An event is encoded once and queued for
    each; an idle stream costs a queue and a waiting task, nothing more. A stream whose
    client stopped reading is ended rather than buffered for."""

    QUEUE = 64  # events a slow client may fall behind by before its stream ends

    def __init__(self, limit):
        self.limit, self.queues = limit, set()

    def open(self):
        if len(self.queues) >= self.limit:
            raise Busy(f'{len(self.queues)} event streams are open on this server, the most '
                       'it keeps (--max-streams); poll /train/status instead, or try again '
                       'later.', retry_after=5)
        queue = asyncio.Queue(self.QUEUE)
        self.queues.add(queue)
        return queue

    def close(self, queue):
        self.queues.discard(queue)

    def send(self, event, payload):
        self.send_text(sse(event, payload))

    def send_text(self, text):
        for queue in self.queues:
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


# ---------------------------------------------------------------------------------------
# The status every worker shows.

def publish(app, job, done=None):
    """Write the job's status (and its final answer) for the other workers."""
    app.ctx.store.write_status({'job': job.name, 'worker': app.ctx.worker,
                                'status': job.status(), 'done': done})


def current_status(app):
    """/train/status of the current or last job, whichever worker runs it."""
    ctx = app.ctx
    shared = None if ctx.job.running else ctx.store.read_status()
    if shared is None:
        return ctx.job.status()
    status = shared['status']
    if status.get('running') and not ctx.store.locked():  # its worker died
        status = {**status, 'running': False}
    return status


async def acquire(app, action, patience=2.0):
    """The store's job lock (taken in a thread: a database store waits for the network), or
    409 with the running job's status (503 when the store cannot be reached). A short hold
    (a reset, a pretrain, a worker repairing the state as it starts) is waited for, up to
    ``patience`` seconds; a running training is not."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + patience
    while True:
        try:
            lock = await taken_in_thread(app, loop)
        except StoreError as e:
            raise Unavailable(f'cannot {action}: {e.strerror}; the live net is unchanged.') \
                from None
        if lock is not None or current_status(app)['running'] or loop.time() > deadline:
            break
        await asyncio.sleep(0.05)
    if lock is None:
        status = current_status(app)
        busy = ('training runs; wait for it to finish (see /train/status)' if status['running']
                else 'another request changes the live net; try again')
        raise Conflict(f'cannot {action} while {busy}.', context={'status': status})
    return lock


async def taken_in_thread(app, loop):
    """store.try_lock in a thread. If the wait is cancelled (its request's client hung up),
    the thread still finishes: a lock it took is released then, never left held."""
    store = app.ctx.store
    future = loop.run_in_executor(None, store.try_lock)
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        def release(done):
            if not done.cancelled() and done.exception() is None and done.result() is not None:
                store.release_lock(done.result())
        future.add_done_callback(release)
        raise


async def outlive_request(app, coroutine):
    """Run a change of the live net, begun under the job lock, to its end whatever happens to
    the request that asked for it: a client that hangs up cancels its handler, and a change
    cut half-way (the lock released while its save still ran in a thread) could overwrite a
    later change that had already answered 200. The request still waiting gets the answer."""
    task = asyncio.create_task(coroutine)
    app.ctx.changes.add(task)
    task.add_done_callback(app.ctx.changes.discard)
    return await asyncio.shield(task)


async def replace_live(app, action, make_net):
    """Make ``make_net()`` the live net once it is saved, under the job lock (409 while a job
    runs or another change is being made). A client that hangs up before the lock is taken
    changes nothing; once it is taken, the change runs to its end (outlive_request)."""
    lock = await acquire(app, action)

    async def change():
        try:
            await make_live(app, make_net(), {'validation_accuracy': None})
        finally:
            app.ctx.store.release_lock(lock)
    await outlive_request(app, change())


def on_step(app, job, info):
    """Record one batch or epoch reported by Graph.run (on the event loop)."""
    ctx = app.ctx
    if info['event'] == 'before':  # the net's validation figures as the job starts
        job.before = info['before']
        ctx.streams.send('before', job.before)
        publish(app, job)
        return
    job.epoch, job.batch = info['epoch'] - job.start, info['batch']
    if info['event'] == 'epoch':
        record = {'epoch': job.epoch, 'loss': round(info['loss'], 6),
                  'val_accuracy': round(info['val_accuracy'], 4),
                  'seconds': round(info['seconds'], 2)}
        job.history.append(record)
        observability.training(app, 'epoch', info['seconds'])
        ctx.streams.send('epoch', {**record, 'epochs': job.epochs})
        publish(app, job)
    elif time.monotonic() - job.last_progress >= ctx.settings.progress_interval:
        job.last_progress = time.monotonic()
        ctx.streams.send('progress', job.progress())
        publish(app, job)


def finish(app, job, done):
    observability.training(app, 'failed' if 'error' in done else 'finished')
    job.running = False
    job.after = done.get('after')
    app.ctx.streams.send('done', done)
    publish(app, job, done)


def replay(streams, seen, state):
    """Send what another worker's job did between two reads of its status."""
    if seen is None or seen['job'] != state['job']:
        seen = {'status': {'history': [], 'epoch': 0, 'batch': 0}, 'done': None}
    old, new = seen['status'], state['status']
    if new.get('before') is not None and old.get('before') is None:
        streams.send('before', new['before'])
    for record in new['history'][len(old['history']):]:
        streams.send('epoch', {**record, 'epochs': new['epochs']})
    if new['running'] and (new['epoch'], new['batch']) != (old['epoch'], old['batch']):
        streams.send('progress', {k: new[k] for k in ('epoch', 'epochs', 'batch', 'batches')})
    if state['done'] is not None and seen['done'] is None:
        streams.send('done', state['done'])


def orphaned(app, state):
    """Whether ``state`` is another worker's job that ended without a word: it is running
    and has no answer, yet nobody holds the job lock (its worker was killed)."""
    return (state is not None and state.get('worker') != app.ctx.worker and
            state.get('done') is None and state['status'].get('running') and
            not app.ctx.store.locked())


async def relay(app):
    """Forward other workers' training events to this worker's streams: one version check
    of the status every ``progress_interval``. A job whose worker died ends them with an
    error."""
    ctx = app.ctx
    store, interval = ctx.store, ctx.settings.progress_interval
    version, seen = store.status_version(), store.read_status()
    while True:
        await asyncio.sleep(interval)
        if store.status_version() == version:
            if ctx.streams.queues and orphaned(app, seen):
                log.warning('a training of the live net ended unfinished: its worker died')
                seen = {**seen, 'done': {'error': 'the training stopped: the server process '
                                         'running it ended. The live net is the last one '
                                         'saved.'}}
                ctx.streams.send('done', seen['done'])
            continue
        version, state = store.status_version(), store.read_status()
        if state is not None and state.get('worker') != ctx.worker:
            try:
                replay(ctx.streams, seen, state)
            except (KeyError, TypeError, ValueError) as e:
                log.warning('ignoring a malformed training status (%s)', e)
        seen = state


# ---------------------------------------------------------------------------------------
# Running a job.

def training_samples(settings):
    """How many training samples the data set holds, read without loading its images (the
    training process loads them); 503 when it is missing or unreadable."""
    path = settings.data_path
    if not path.is_file():
        raise Unavailable(NO_DATA)
    try:
        with np.load(path, allow_pickle=False) as f:
            return len(f['y_train'])
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as e:
        log.warning('training data %s unreadable: %s', path, e)
        raise Unavailable('the training data on this server cannot be read; its operator '
                          'can rebuild it with `make data`.') from None


# What the page says beside a disabled Train button, and what /train answers (no path: the
# operator knows where the file is, a visitor must not learn it).
NO_DATA = ('training needs MNIST\'s training images, and this server does not have them; its '
           'operator can add them with `make data`.')


def can_train(settings):
    """(whether /train can run, else the sentence that says why): the file is looked at, not
    read, on every /models."""
    return (True, None) if settings.data_path.is_file() else (False, NO_DATA)


async def start_job(app, epochs, with_samples=False):
    """Take the lock, start a job on a copy of the newest live net (on MNIST, and with
    ``with_samples`` on the stored samples too); its answer. Once the lock is taken, starting
    runs to its end even if the client hangs up (the job itself always did); a client gone
    before that starts nothing."""
    lock = await acquire(app, 'start another training')
    return await outlive_request(app, begin_job(app, lock, epochs, with_samples))


async def begin_job(app, lock, epochs, with_samples):
    ctx = app.ctx
    try:
        count = training_samples(ctx.settings)
        samples = await stored_samples(app) if with_samples else None
        await newest_live(app)  # train the newest net, whichever worker saved it
        if behind(app):
            raise Unavailable('this server has not loaded the newest live net yet ('
                              f'{ctx.reload.problem or "loading it"}); try again.')
    except BaseException:
        ctx.store.release_lock(lock)
        raise
    if samples is not None:
        count += trainer.extra_per_epoch(count, ctx.settings.sample_share)
    batches = -(-count // ctx.live.batch_size)
    ctx.job = Job(epochs, batches, ctx.live.epochs, f'{ctx.worker}-{time.time_ns()}')
    publish(app, ctx.job)
    observability.training(app, 'started')
    log.info('training %d epochs of %d batches%s', epochs, batches,
             f', with {len(samples[1])} + {len(samples[3])} samples' if samples else '')
    # The job outlives this request: a client that hangs up does not stop it.
    ctx.job_task = asyncio.create_task(run_job(app, ctx.job, lock, samples))
    return await asyncio.shield(ctx.job_task)


async def stored_samples(app):
    """(X_train, y_train, X_val, y_val) of the stored samples: every fifth by id held out."""
    from .routes.samples import in_store  # the store's errors as statuses

    ids, X, y = await in_store(app, 'arrays')
    held = is_validation(ids)
    if held.all():
        raise BadRequest(f'there are {len(ids)} stored samples and none to train on (every '
                         'fifth is kept for validation): store some with POST /samples '
                         'first, or train without samples.')
    return X[~held], y[~held], X[held], y[held]


def receive(pipe, loop, on_step):
    """In a thread: hand the training process's steps to the event loop; its last message."""
    while True:
        try:
            message = pipe.recv()
        except EOFError:
            return 'error', 'the training process ended unexpectedly (logged on the server).'
        if message[0] != 'step':
            return message
        loop.call_soon_threadsafe(on_step, message[1])


async def run_job(app, job, lock, samples=None):
    """Train a copy of the live net in a process, save it, then make it live; the /train
    answer. Releases the job ``lock`` when done."""
    ctx, settings = app.ctx, app.ctx.settings
    loop = asyncio.get_running_loop()
    receiver, sender = SPAWN.Pipe(duplex=False)
    process = SPAWN.Process(target=trainer.train, name='train', args=(
        ctx.live.copy(), settings.data_path, job.epochs, sender, ctx.stopping,
        settings.score_samples, settings.progress_interval, settings.train_niceness, samples,
        settings.sample_share))
    started = time.perf_counter()
    try:
        process.start()
        sender.close()  # only the process holds it now: its end is our EOF
        outcome, *result = await loop.run_in_executor(
            ctx.trainer, receive, receiver, loop, functools.partial(on_step, app, job))
        if outcome == 'diverged':
            raise btf.TrainingDiverged(result[0])
        if outcome != 'done':
            await loop.run_in_executor(None, process.join, 5)  # its exit code, once it ended
            code = process.exitcode
            log.error('training failed: %s (exit code %s)', result[0],
                      f'{code}, killed by {signal.Signals(-code).name}'
                      if code is not None and code < 0 else code)
            raise SanicException(result[0], 500)
        if ctx.stopping.is_set():
            raise Unavailable('the server is shutting down; training was stopped and the live '
                              'net is unchanged.')
        net, history, accuracy, comparison = result
        await make_live(app, net, {'validation_accuracy': round(history[-1]['val_accuracy'], 4),
                                   'trained_on_samples': samples is not None})
        answer = {'accuracy': accuracy, 'validation_accuracy': ctx.live_meta['validation_accuracy'],
                  'epochs': net.epochs, 'seconds': round(time.perf_counter() - started, 2),
                  'samples': samples is not None, **comparison}
        log.info('trained %d epochs in %.1f s: validation accuracy %.4f, %d/%d', job.epochs,
                 answer['seconds'], answer['validation_accuracy'], accuracy,
                 settings.score_samples)
        finish(app, job, answer)
        return answer
    except btf.TrainingDiverged as e:
        finish(app, job, {'error': f'training diverged: {e}'})
        raise SanicException(f'training diverged: {e}', 500) from None
    except Exception as e:  # the page must learn that the job ended
        finish(app, job, {'error': str(e) if isinstance(e, SanicException) else
                          'training failed (logged on the server).'})
        raise
    finally:
        job.running = False
        receiver.close()
        ctx.store.release_lock(lock)
        if process.is_alive():  # it ends right after its last message
            await loop.run_in_executor(ctx.trainer, process.join)
