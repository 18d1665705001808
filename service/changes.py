"""Changing a net: its job lock, a change that runs to its end whatever its client does, and
the changes that replace a net's weights at once (reset, pretrain, rollback). Every change is
a new version of the net (``Registry.save``)."""
import asyncio
import logging

from .errors import Conflict, Unavailable
from .store import StoreError

log = logging.getLogger(__name__)


async def acquire(app, net, action, patience=2.0):
    """The net's job lock (taken in a thread: a database store waits for the network), or
    409 with the net's running job's status (503 when the store cannot be reached). A short
    hold (a reset, a pretrain, a worker repairing the state as it starts) is waited for, up to
    ``patience`` seconds; a running training is not."""
    from .training import current_status

    loop = asyncio.get_running_loop()
    deadline = loop.time() + patience
    while True:
        try:
            lock = await taken_in_thread(app, net.name, loop)
        except StoreError as e:
            raise Unavailable(f'cannot {action}: {e.strerror}; the net is unchanged.') \
                from None
        if lock is not None:
            return lock
        status = await current_status(app, net)
        if status['running'] or loop.time() > deadline:
            break
        await asyncio.sleep(0.05)
    busy = ('training runs; wait for it to finish (see /train/status)' if status['running']
            else 'another request changes this net; try again')
    raise Conflict(f'cannot {action} while {busy}.', context={'status': status})


async def taken_in_thread(app, name, loop):
    """store.try_lock in a thread. If the wait is cancelled (its request's client hung up),
    the thread still finishes: a lock it took is released then, never left held."""
    store = app.ctx.store
    future = loop.run_in_executor(None, store.try_lock, name)
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        def release(done):
            if not done.cancelled() and done.exception() is None and done.result() is not None:
                store.release_lock(done.result())
        future.add_done_callback(release)
        raise


async def outlive_request(app, coroutine):
    """Run a change of a net, begun under its job lock, to its end whatever happens to the
    request that asked for it: a client that hangs up cancels its handler, and a change cut
    half-way (the lock released while its save still ran in a thread) could overwrite a
    later change that had already answered 200. The request still waiting gets the answer."""
    task = asyncio.create_task(coroutine)
    app.ctx.changes.add(task)
    task.add_done_callback(app.ctx.changes.discard)
    return await asyncio.shield(task)


async def replace(app, net, action, make_graph, cause, meta=None):
    """Make ``make_graph()`` the net's new version once it is saved, under the net's job lock
    (409 while a job runs or another change is being made). A client that hangs up before
    the lock is taken changes nothing; once it is taken, the change runs to its end
    (outlive_request). Returns the new version's number."""
    lock = await acquire(app, net, action)

    async def change():
        try:
            return await app.ctx.nets.save(net, make_graph(),
                                           meta or {'validation_accuracy': None}, cause)
        finally:
            app.ctx.store.release_lock(lock)
    return await outlive_request(app, change())
