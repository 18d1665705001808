"""The nets: what is live and shipped (/models), the first layer's weights (/model/hidden),
and the two changes that replace the live net (/reset, /pretrain)."""
import asyncio
import logging

import numpy as np
from sanic import Blueprint, json, text

from ..errors import Unavailable
from ..guard import changes_state
from ..nets import MANIFEST, describe, fresh_net, sync_live
from ..parsing import query_int
from ..protocol import send_chunked
from ..training import replace_live
from .prediction import dump_numpy, pick_net

log = logging.getLogger(__name__)
bp = Blueprint('models')


@bp.get('/models')
async def models(request):
    ctx = request.app.ctx
    sync_live(request.app)
    return json({
        'live': describe(ctx.live, ctx.live_meta),
        'best': ctx.best,
        'pretrained': [{'version': v, 'sizes': list(net.sizes), 'epochs': net.epochs,
                        'test_accuracy': entry.get('test_accuracy'),
                        'recipe': entry.get('recipe'), 'best': v == ctx.best}
                       for v, (entry, net) in sorted(ctx.pretrained.items())],
        'settings': ctx.settings.public})


def hidden_json(model, net):
    units = np.round(np.ascontiguousarray(net.weights[0].T, np.float64), 4)  # (hidden, 784)
    return dump_numpy({'model': model, 'sizes': list(net.sizes), 'units': units})


@bp.get('/model/hidden')
async def hidden(request):
    """Built once per net, off the event loop (a 784-800-10 net's answer is megabytes), and
    written in chunks that wait for the client to read."""
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
            body = await asyncio.shield(task)
        finally:
            ctx.hidden_tasks.pop((model, id(net)), None)
        ctx.hidden_cache[model] = cached = net, body
    await send_chunked(request, cached[1], 'application/json')


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
                f'no pretrained models in {ctx.settings.models_dir} ({MANIFEST} is missing or '
                'lists none); `make models` builds them.')
        return ctx.pretrained[ctx.best][1].copy()

    await replace_live(request.app, 'load the pretrained model', best_copy)
    log.info('live net is now a copy of pretrained v%d', ctx.best)
    return text('OK')
