"""The nets: what is live and shipped (/models), the first layer's weights (/model/hidden),
and the two changes that replace the live net (/reset, /pretrain)."""
import asyncio
import gzip
import logging

import numpy as np
from sanic import Blueprint, json, text

from ..errors import Busy, Unavailable
from ..guard import changes_state
from ..nets import MANIFEST, describe, fresh_net, newest_live
from ..parsing import query_int
from ..protocol import send_chunked
from ..training import can_train, replace_live
from .prediction import dump_numpy, pick_net

log = logging.getLogger(__name__)
bp = Blueprint('models')


@bp.get('/models')
async def models(request):
    ctx = request.app.ctx
    await newest_live(request.app)
    trains, why = can_train(ctx.settings)
    return json({
        'live': describe(ctx.live, ctx.live_meta),
        'best': ctx.best,
        'pretrained': [{'version': v, 'sizes': list(net.sizes), 'epochs': net.epochs,
                        'test_accuracy': entry.get('test_accuracy'),
                        'recipe': entry.get('recipe'), 'best': v == ctx.best}
                       for v, (entry, net) in sorted(ctx.pretrained.items())],
        'settings': {**ctx.settings.public, 'can_train': trains, 'cannot_train': why}})


def hidden_json(model, net):
    """The answer of /model/hidden for a net: (JSON bytes, the same gzipped)."""
    units = np.round(np.ascontiguousarray(net.weights[0].T, np.float64), 4)  # (hidden, 784)
    body = dump_numpy({'model': model, 'sizes': list(net.sizes), 'units': units})
    return body, gzip.compress(body, 6)


@bp.get('/model/hidden')
async def hidden(request):
    """Built once per net, off the event loop (a 784-800-10 net's answer is megabytes; gzipped
    for every client that accepts it, as browsers do), and written in chunks that wait for the
    client to read."""
    ctx = request.app.ctx
    version = request.get_args(keep_blank_values=True).get('pretrained')
    model, net = pick_net(request.app, query_int(version))
    cached = ctx.hidden_cache.get(model)
    if cached is None or cached[0] is not net:
        task = ctx.hidden_tasks.get((model, id(net)))
        if task is None:  # one build per net, however many ask at once
            task = asyncio.get_running_loop().run_in_executor(
                ctx.decoders, hidden_json, model, net)
            ctx.hidden_tasks[model, id(net)] = task
        try:
            bodies = await asyncio.shield(task)
        finally:
            ctx.hidden_tasks.pop((model, id(net)), None)
        ctx.hidden_cache[model] = cached = (net, *bodies)
    _, body, zipped = cached
    if 'gzip' in request.headers.get('accept-encoding', '').lower():
        body, headers = zipped, {'Content-Encoding': 'gzip', 'Vary': 'Accept-Encoding'}
    else:
        headers = {'Vary': 'Accept-Encoding'}
    # A few large answers at a time: the others wait their turn, so that many readers of
    # megabytes cannot keep the event loop from everyone else's requests.
    try:
        async with asyncio.timeout(ctx.settings.write_timeout):
            await ctx.large_answers.acquire()
    except TimeoutError:
        raise Busy('too many clients are downloading weights right now; try again in a '
                   'few seconds.', retry_after=5) from None
    try:
        await send_chunked(request, body, 'application/json', headers)
    finally:
        ctx.large_answers.release()


@bp.route('/reset', methods=['GET', 'POST'])
@changes_state
async def reset(request):
    settings = request.app.ctx.settings
    await replace_live(request.app, 'reset', lambda: fresh_net(settings))
    log.info('live net reset: %s', request.app.ctx.live)
    return text('OK')


@bp.route('/pretrain', methods=['GET', 'POST'])
@changes_state
async def pretrain(request):
    ctx = request.app.ctx

    def best_copy():
        if ctx.best is None:
            raise Unavailable(
                f'this server has no pretrained models ({MANIFEST} is missing or lists none); '
                'its operator can build them with `make models`.')
        return ctx.pretrained[ctx.best][1].copy()

    await replace_live(request.app, 'load the pretrained model', best_copy)
    log.info('live net is now a copy of pretrained v%d', ctx.best)
    return text('OK')
