"""Training jobs: the queue every /train goes through, and running a job.

A /train is a job in the training queue (``jobs.py``): at most one per net, at most
``--max-queued`` waiting; it answers when its job is done, as before. Every worker runs a
``dispatch`` loop: while the machine has a free training slot (``--max-trainings`` at once,
flock'ed files in the state folder: every worker of the machine shares them), it claims the
oldest queued job, of any worker or (with PostgreSQL) any server, and trains a copy of the
net's newest version in a process of its own (``trainer.train``: no GIL shared with the event
loop), which sends its progress and then the trained net back through a pipe; predictions keep
using the last complete version until the trained one is saved and swapped in. The running
worker publishes the job's status for the net; the others relay it to their event streams.
A runner that dies stops beating: its job is run again once, elsewhere, then ends failed.
"""
import asyncio
import dataclasses
import fcntl
import functools
import logging
import multiprocessing
import os
import signal
import time
import zipfile

import numpy as np

import better_tensorflow as btf

from . import gate, judge, observability, trainer
from .changes import acquire
from .errors import (
    BadRequest,
    Busy,
    Conflict,
    InsufficientStorage,
    SanicException,
    Unavailable,
    store_call,
)
from .insight import TEST_IMAGES_FILE
from .jobs import JobExists, QueueFull
from .samples import in_store, is_validation
from .store import LIVE

log = logging.getLogger(__name__)
SPAWN = multiprocessing.get_context('spawn')  # a fresh interpreter: no copy of our threads
BEAT = 5.0  # seconds between a running job's heartbeats
STALE = 20.0  # seconds without one after which its runner counts as dead
WAIT = 0.1  # seconds between two looks at a waiting job


class Job:
    """Progress of a net's current (or last) training job, as /train/status shows it. Only
    the event loop changes it."""

    def __init__(self, epochs=0, batches=0, start=0, name=''):
        self.name = name  # unique across workers
        self.running = epochs > 0
        self.epochs, self.batches = epochs, batches
        self.start = start  # epochs the net had before this job
        self.epoch, self.batch = min(epochs, 1), 0
        self.history = []
        self.before = self.after = None  # validation figures before and after the job
        self.view = None  # the last epoch's confusion matrix and pictures (playground.py)
        self.last_progress = 0.0

    def progress(self):
        return {'epoch': self.epoch, 'epochs': self.epochs, 'batch': self.batch,
                'batches': self.batches}

    def status(self):
        figures = {} if self.before is None else {'before': self.before, 'after': self.after}
        view = {} if self.view is None else {'view': self.view}
        return {'running': self.running, 'state': 'running' if self.running else 'idle',
                **self.progress(), 'history': list(self.history), **figures, **view}


# ---------------------------------------------------------------------------------------
# The status every worker shows.

def publish(app, net, job, done=None, state=None):
    """Write the job's status (and its final answer) for the other workers."""
    status = job.status()
    if state is not None:
        status.update(state)
    app.ctx.store.write_status({'job': job.name, 'worker': app.ctx.worker, 'status': status,
                                'done': done}, net)


async def current_status(app, net):
    """/train/status of the net's current or last job, whichever worker or server runs it,
    as the queue knows it: a job still waiting says so, with its place (1: next); a runner
    that died says "running" until the queue takes its job back, then what became of it."""
    ctx = app.ctx
    if net.job.running:
        return net.job.status()
    shared = ctx.store.read_status(net.name)
    status = Job().status() if shared is None else dict(shared['status'])
    try:
        job = await in_queue(app, 'latest', net.name)
    except (Unavailable, InsufficientStorage):  # the queue is away: what was published
        job = None
    if job is None:
        if status.get('running') and not ctx.store.locked(net.name):  # ended, unfinished
            status.update(running=False, state='failed')
        elif status.get('state') in ('queued', 'running'):
            status['state'] = 'idle'
        status.pop('position', None)
    elif job['state'] == 'queued':
        status.update(running=False, state='queued',
                      position=await in_queue(app, 'position', job['id']))
    elif job['state'] in ('done', 'failed'):  # the queue's word is final, whatever was
        status.update(running=False, state=job['state'])  # published last (it may lag)
        status.pop('position', None)
    elif gone(job['runner']):  # its process ended: the queue takes it back at its next round
        status.update(running=False, state='failed' if status.get('running') else 'idle')
        status.pop('position', None)
    else:
        status.update(running=True, state='running')
        status.pop('position', None)
    return status


async def in_queue(app, method, *args):
    """A call of the training queue, in a thread; 507 when the disk is full, 503 when it
    cannot be reached."""
    if app.ctx.jobs is None:
        raise Unavailable('the training queue cannot be opened (see the server log); nothing '
                          'was changed.')
    return await store_call(getattr(app.ctx.jobs, method), *args, executor=app.ctx.db,
                            full='the training could not be queued, and the net is unchanged.',
                            fault='the training queue cannot be reached: {}; nothing was '
                                  'changed.')


def on_step(app, net, job, info):
    """Record one batch or epoch reported by Graph.run (on the event loop)."""
    ctx, name = app.ctx, net.name
    if info['event'] == 'before':  # the net's validation figures as the job starts
        job.before = info['before']
        ctx.streams.send(name, 'before', job.before)
        publish(app, name, job)
        return
    job.epoch, job.batch = info['epoch'] - job.start, info['batch']
    if info['event'] == 'epoch':
        record = {'epoch': job.epoch, 'loss': round(info['loss'], 6),
                  'val_accuracy': round(info['val_accuracy'], 4),
                  'seconds': round(info['seconds'], 2),
                  'learning_rate': info.get('learning_rate'),
                  'train_accuracy': info.get('train_accuracy'),
                  'val_loss': info.get('val_loss')}
        job.history.append(record)
        # The large part, only the last epoch's: the status is written at every progress.
        job.view = {'epoch': job.epoch, 'view_samples': info.get('view_samples'),
                    'confusion': info.get('confusion'), 'units': info.get('units')}
        observability.training(app, 'epoch', info['seconds'])
        ctx.streams.send(name, 'epoch', {**record, 'epochs': job.epochs, **job.view})
        publish(app, name, job)
    elif time.monotonic() - job.last_progress >= ctx.settings.progress_interval:
        job.last_progress = time.monotonic()
        ctx.streams.send(name, 'progress', job.progress())
        publish(app, name, job)


def finish(app, net, job, done):
    observability.training(app, 'failed' if 'error' in done else 'finished')
    job.running = False
    job.after = done.get('after')
    app.ctx.streams.send(net.name, 'done', done)
    publish(app, net.name, job, done, {'state': 'failed' if 'error' in done else 'done'})


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


async def start_job(app, net, epochs, with_samples=False, options=None):
    """Queue a job for the net (409 when it has one queued or running, 503 when the queue is
    full) and answer when it is done, whichever worker or server runs it. What would make it
    fail at once (no training data, no samples to train on) is checked first. A client that
    hangs up leaves its job in the queue: it runs all the same. ``options``: training
    options (playground.TRAINING_OPTIONS, checked) for the copy that trains."""
    ctx = app.ctx
    training_samples(ctx.settings)
    if with_samples:
        await stored_samples(app, net.name)
    spec = {'epochs': epochs, 'samples': with_samples, **({'options': options} if options
                                                            else {})}
    try:
        try:
            job_id = await in_queue(app, 'submit', net.name, spec, ctx.settings.max_queued,
                                    ctx.worker)
        except JobExists as e:
            if not await reap(app, net, e.job):
                raise
            job_id = await in_queue(app, 'submit', net.name, spec, ctx.settings.max_queued,
                                    ctx.worker)
    except JobExists as e:
        status = await current_status(app, net)
        busy = ('training runs; wait for it to finish (see /train/status)'
                if e.job['state'] == 'running' else
                'its training waits in the queue (see /train/status)')
        raise Conflict(f'cannot start another training of this net while {busy}.',
                       context={'status': status}) from None
    except QueueFull as e:
        raise Busy(f'{e.queued} trainings are waiting, the most this server queues '
                   '(--max-queued); try again in a minute.', retry_after=30) from None
    ctx.wake.set()
    return await wait_for_job(app, net, job_id)  # the job runs whether its client waits or not


def gone(worker):
    """Whether a worker (``app.ctx.worker``: host, process tag, app) is known to be dead: one
    of this machine's, in this pid namespace, whose process has ended. Another machine's (or
    container's: the same host name says nothing of its process ids) is not known here."""
    tag = str(worker).rpartition(':')[2].rpartition('-')[0]
    return btf.process_alive(tag) is False


async def reap(app, net, job):
    """Whether the net's "running" job was the job of a runner that died (a killed worker or
    server): nobody holds the net's lock for a second. It is then taken back at once
    (jobs.recover: run again for a request still waiting, else failed)."""
    if job['state'] != 'running':
        return False
    loop = asyncio.get_running_loop()
    for _ in range(0 if gone(job['runner']) else 10):  # a runner that just claimed it takes
        #                                                  the lock within moments
        if await loop.run_in_executor(None, app.ctx.store.locked, net.name):
            return False
        await asyncio.sleep(0.1)
    taken = await in_queue(app, 'recover', STALE, [job['id']], gone)
    for dead, what in taken:
        log.error('the runner of training job %d (%s) died: the job is %s', dead['id'],
                  net.title, what)
    return any(what == 'failed' for _, what in taken)


async def wait_for_job(app, net, job_id):
    """The answer of a queued job, once it is done; while it waits, its place in the queue
    is published (``queued`` events, /train/status) whenever it changes."""
    ctx, place = app.ctx, None
    ctx.waiting.add(asyncio.current_task())  # shutdown lets it answer first
    last_beat = 0.0
    try:
        while True:
            if time.monotonic() - last_beat > BEAT:  # a request still waits for it
                last_beat = time.monotonic()
                await in_queue(app, 'wait', job_id, ctx.worker)
            result = ctx.finished.pop(job_id, None)  # run by this worker: known at once
            if result is None:
                job = await in_queue(app, 'get', job_id)
                if job is None:
                    raise Unavailable('the training job was lost from the queue; try again.')
                if job['state'] in ('done', 'failed'):
                    result = job['result'] or {}
                elif job['state'] == 'queued':
                    position = await in_queue(app, 'position', job_id)
                    if position != place:
                        place = position
                        ctx.streams.send(net.name, 'queued', {'position': position})
                        publish(app, net.name, Job(name=f'queued-{job_id}'),
                                state={'state': 'queued', 'position': position})
            if result is not None:
                result = dict(result)
                status = result.pop('status', 500)
                if status >= 400:
                    raise SanicException(result.get('error', 'training failed.'), status,
                                         context={k: v for k, v in result.items()
                                                  if k != 'error'} or None)
                return result
            try:
                await asyncio.wait_for(ctx.job_ended.wait(), WAIT)
            except TimeoutError:
                pass
    finally:
        ctx.waiting.discard(asyncio.current_task())


# ---------------------------------------------------------------------------------------
# Every worker's runner: free slots take the oldest queued jobs.

class Slots:
    """The machine's training slots: flock'ed files in the state folder, one job each, shared
    by every worker of the machine (released by the kernel if a worker dies)."""

    def __init__(self, folder, count):
        self.folder, self.count = folder / 'slots', count

    def take(self):
        """A held slot (release it), or None when all are taken."""
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            log.error('no training slots: %s', e)
            return None
        for number in range(self.count):
            fd = os.open(self.folder / f'{number}.lock', os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return fd
            except BlockingIOError:
                os.close(fd)
        return None

    @staticmethod
    def release(fd):
        os.close(fd)


async def dispatch(app):
    """Run queued jobs while this machine has free training slots; take back the jobs of
    runners that died. Woken when a job is queued here, else every second."""
    ctx, loop = app.ctx, asyncio.get_running_loop()
    slots = Slots(ctx.settings.state_dir, ctx.settings.max_trainings)
    last_recovery = 0.0
    if ctx.jobs is None or not ctx.settings.max_trainings:  # this worker runs no job
        return
    first, problem = True, None
    while not ctx.stopping.is_set():
        if not first:  # the first round at once: a dead runner's job is known at start
            try:
                await asyncio.wait_for(ctx.wake.wait(), 1.0)
            except TimeoutError:
                pass
        first = False
        ctx.wake.clear()
        try:
            if loop.time() - last_recovery > BEAT:
                last_recovery = loop.time()
                for job, what in await in_queue(app, 'recover', STALE, (), gone):
                    log.error('the runner of training job %d (net %s) stopped beating: the '
                              'job is %s', job['id'], job['net'], what)
            while not ctx.stopping.is_set():
                slot = await loop.run_in_executor(ctx.db, slots.take)
                if slot is None:
                    break
                job = await in_queue(app, 'claim', ctx.worker)
                if job is None:
                    slots.release(slot)
                    break
                task = asyncio.create_task(run_claimed(app, job, slot, slots))
                ctx.running.add(task)
                task.add_done_callback(ctx.running.discard)
        except Exception as e:  # the queue was unreachable: try again at the next round
            if str(e) != problem:  # once per problem, not every second
                log.error('the training queue could not be read: %s', e,
                          exc_info=not isinstance(e, SanicException))
            problem = str(e)
        else:
            problem = None


async def run_claimed(app, job, slot, slots):
    """Run a claimed job to its end and store its answer (with its HTTP status) for the
    request waiting for it; beats while it runs."""
    ctx = app.ctx
    stop = SPAWN.Event()  # set at shutdown, or when the queue took the job back
    ctx.job_stops.add(stop)
    beating = asyncio.create_task(beat(app, job, stop))
    try:
        result = await run_spec(app, job, stop)
        result = {'status': 200, **result}
    except SanicException as e:
        result = {'status': e.status_code, 'error': str(e), **(getattr(e, 'context', None)
                                                               or {})}
    except Exception:
        log.exception('training job %d failed', job['id'])
        result = {'status': 500, 'error': 'training failed (logged on the server).'}
    finally:
        beating.cancel()
        ctx.job_stops.discard(stop)
        slots.release(slot)
        ctx.wake.set()  # the slot is free
    ctx.finished[job['id']] = result  # for a request of this worker waiting for it
    ctx.job_ended.set()
    ctx.job_ended.clear()
    try:
        await in_queue(app, 'finish', job['id'], result, result['status'] >= 400, ctx.worker)
    except Unavailable:
        log.error('the answer of training job %d could not be stored', job['id'])
    finally:
        if len(ctx.finished) > 1000:  # answers nobody here waited for
            ctx.finished.clear()


async def beat(app, job, stop):
    """Tell the queue the job's runner lives; a job taken back meanwhile (this runner was
    thought dead: it could not reach the queue for STALE seconds) is stopped here, never
    saved (the queue runs it again, or ended it)."""
    while True:
        await asyncio.sleep(BEAT)
        try:
            if not await in_queue(app, 'beat', job['id'], app.ctx.worker):
                log.error('training job %d was taken back by the queue: stopping it here',
                          job['id'])
                stop.set()
                return
        except Unavailable as e:
            log.warning('training job %d: %s', job['id'], e)


async def run_spec(app, job, stop):
    """Train the net a claimed job names, as it asks; its answer."""
    ctx, spec = app.ctx, job['spec']
    net = await ctx.nets.get(job['net'])
    lock = await acquire(app, net, 'start another training', patience=10.0)
    try:
        count = training_samples(ctx.settings)
        samples = await stored_samples(app, net.name) if spec.get('samples') else None
        net = await ctx.nets.get(net.name)  # its newest version, whichever process saved it
        if ctx.nets.behind(net):  # never train (and save over) an older version
            raise Unavailable('this server has not loaded the net\'s newest version yet '
                              f'({net.problem or "loading it"}); try again.')
    except BaseException:
        ctx.store.release_lock(lock)
        raise
    if samples is not None:
        count += trainer.extra_per_epoch(count, ctx.settings.sample_share)
    epochs, options = spec['epochs'], spec.get('options') or {}
    batches = -(-count // options.get('batch_size', net.graph.batch_size))
    if samples is not None:  # steps on a mix, not MNIST epochs (trainer.adapt_to)
        batches = recipe(ctx.settings, net).steps
    net.job = Job(epochs, batches, net.graph.epochs, f'{ctx.worker}-{time.time_ns()}')
    publish(app, net.name, net.job)
    observability.training(app, 'started')
    log.info('training %s: %d epochs of %d batches%s', net.title, epochs, batches,
             f', with {len(samples[1])} + {len(samples[3])} samples' if samples else '')
    net.job_task = asyncio.create_task(run_job(app, net, net.job, lock, samples, stop,
                                               options))
    answer = await asyncio.shield(net.job_task)
    if samples is not None:  # what the new version never trained on, judged again
        await judge.after_training(app, net.name)
    return answer


async def stored_samples(app, name=LIVE):
    """(X_train, y_train, X_val, y_val) of the samples a net trains on: every fifth by id
    held out; the shared net's without the drawings held back (judge.py), in both parts."""
    hold = judge.hold(app, name)
    ids, X, y = await in_store(app, 'arrays', name, False if hold else None)
    held = is_validation(ids)
    if held.all():
        waiting = f' ({(await in_store(app, "list", None, 0, 1, name, True))[0]} more are held '\
                  'back as possibly mislabelled: GET /samples?suspect=1)' if hold else ''
        raise BadRequest(f'there are {len(ids)} stored samples{waiting} and none to train on '
                         '(every fifth is kept for validation): store some with POST /samples '
                         'first, or train without samples.')
    digits = np.unique(y[~held])
    if name != LIVE and len(digits) < 2:  # adapting would teach it to read that digit only
        raise BadRequest(f'this net\'s drawings to train on are all of the digit '
                         f'{int(digits[0])}: adapting to one digit alone teaches a net to see '
                         'it everywhere. Store drawings of at least two digits (GET '
                         '/nets/{name}/ask says which to draw), then train.')
    return X[~held], y[~held], X[held], y[held]


def recipe(settings, net):
    """How a net trains with samples: a private net adapts to its owner's few drawings
    (trainer.ADAPT), the live net learns from everyone's (trainer.SHARED, --sample-share of
    every batch)."""
    if net.name != LIVE:
        return trainer.ADAPT
    return dataclasses.replace(trainer.SHARED, share=settings.sample_share)


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


async def run_job(app, net, job, lock, samples=None, stop=None, options=None):
    """Train a copy of the net in a process and save it as its new version; make that
    current if it passes the gate (``gate.judge``), else keep it as a candidate and leave the
    net as it was; the /train answer, which says which ("promoted", "gate"). Releases the
    net's job ``lock`` when done. ``stop``: set, the process stops after its batch and
    nothing is saved. ``options``: Graph.configure's, for the copy."""
    ctx, settings = app.ctx, app.ctx.settings
    loop = asyncio.get_running_loop()
    receiver, sender = SPAWN.Pipe(duplex=False)
    work = trainer.Assignment(net.graph.copy(), settings.data_path, job.epochs,
                              settings.score_samples, settings.progress_interval,
                              settings.train_niceness, samples, settings.sample_share,
                              options or {},
                              test_path=settings.models_dir / TEST_IMAGES_FILE,
                              adapt=None if samples is None else recipe(settings, net))
    stop = ctx.stopping if stop is None else stop
    process = SPAWN.Process(target=trainer.train, name='train', args=(work, sender, stop))
    started = time.perf_counter()
    try:
        process.start()
        sender.close()  # only the process holds it now: its end is our EOF
        outcome, *result = await loop.run_in_executor(
            ctx.trainer, receive, receiver, loop, functools.partial(on_step, app, net, job))
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
            raise Unavailable('the server is shutting down; training was stopped and the net '
                              'is unchanged.')
        if stop.is_set():
            raise Conflict('this training was taken back by the queue (its server could not '
                           'reach it); the net is unchanged here.')
        graph, history, accuracy, comparison = result
        private = net.name != LIVE
        verdict = gate.judge(comparison['before'], comparison['after'],
                             gate.tolerances(settings, private), private)
        # A private net trained without drawings is its learner's experiment (the
        # playground): measured and said, never held back.
        verdict['applied'] = not private or samples is not None
        promoted = verdict['passed'] or not verdict['applied']
        validation = round(history[-1]['val_accuracy'], 4)
        version = await ctx.nets.save(
            net, graph, {'validation_accuracy': validation,
                         'trained_on_samples': samples is not None,
                         'promoted': promoted, 'gate': verdict}, 'train', current=promoted)
        answer = {'accuracy': accuracy, 'validation_accuracy': validation,
                  'epochs': graph.epochs, 'seconds': round(time.perf_counter() - started, 2),
                  'samples': samples is not None, 'version': version,
                  'promoted': promoted, 'gate': verdict, **comparison}
        log.info('trained %s %d epochs in %.1f s: validation accuracy %.4f, %d/%d; %s',
                 net.title, job.epochs, answer['seconds'], answer['validation_accuracy'],
                 accuracy, settings.score_samples,
                 f'version {version} is current' if promoted else
                 f'version {version} kept, not current: {verdict["reason"]}')
        finish(app, net, job, answer)
        return answer
    except btf.TrainingDiverged as e:
        finish(app, net, job, {'error': f'training diverged: {e}'})
        raise SanicException(f'training diverged: {e}', 500) from None
    except Exception as e:  # the page must learn that the job ended
        finish(app, net, job, {'error': str(e) if isinstance(e, SanicException) else
                               'training failed (logged on the server).'})
        raise
    finally:
        job.running = False
        receiver.close()
        ctx.store.release_lock(lock)
        if process.is_alive():  # it ends right after its last message
            await loop.run_in_executor(ctx.trainer, process.join)
