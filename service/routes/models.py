"""The nets: what is live and shipped (/models), the first layer's weights (/model/hidden),
and the two changes that replace the live net (/reset, /pretrain)."""
import asyncio
import gzip
import logging

import numpy as np
from sanic import Blueprint, json, text

from ..changes import replace
from ..declare import (
    BUSY,
    INT,
    NET_QUERY,
    NO_NET,
    NUMBER,
    OK_TEXT,
    SIZES,
    answer,
    documented,
    error,
)
from ..errors import Busy, Unavailable
from ..guard import changes_state
from ..inputs import pick_net
from ..nets import MANIFEST, describe, fresh_net
from ..parsing import dump_numpy, json_body, net_name, query_int
from ..playground import offered
from ..protocol import send_chunked
from ..training import can_train

log = logging.getLogger(__name__)
bp = Blueprint('models')


MODELS = {
    'type': 'object',
    'properties': {
        'live': {'type': 'object', 'properties': {
            'sizes': SIZES, 'epochs': INT,
            'validation_accuracy': {'type': 'number', 'nullable': True},
            'learning_rate': NUMBER, 'batch_size': INT, 'options': {'type': 'object'},
            'version': {'type': 'integer', 'nullable': True}}},
        'best': {'type': 'integer', 'nullable': True},
        'settings': {'type': 'object', 'description': "the server's defaults: "
                     'default_net, max_epochs, score_samples, max_body'},
        'pretrained': {'type': 'array', 'items': {
            'type': 'object', 'properties': {
                'version': INT, 'sizes': SIZES, 'epochs': INT, 'test_accuracy': NUMBER,
                'recipe': {'type': 'string'}, 'best': {'type': 'boolean'}}}}}}
HIDDEN = {
    'type': 'object',
    'properties': {
        'model': {'type': 'string'}, 'sizes': SIZES,
        'units': {'type': 'array', 'items': {
            'type': 'array', 'minItems': 784, 'maxItems': 784, 'items': NUMBER}}}}


@bp.get('/models')
@documented(lambda ctx: {'summary': 'the live net and the pretrained models',
                         'responses': {'200': answer(ctx.schema('Models', MODELS))}})
async def models(request):
    ctx = request.app.ctx
    live = await ctx.nets.get()
    trains, why = can_train(ctx.settings)
    return json({
        'live': describe(live.graph, live.meta),
        'best': ctx.best,
        'pretrained': [{'version': v, 'sizes': list(net.sizes), 'epochs': net.epochs,
                        'test_accuracy': entry.get('test_accuracy'),
                        'recipe': entry.get('recipe'), 'best': v == ctx.best}
                       for v, (entry, net) in sorted(ctx.pretrained.items())],
        'settings': {**ctx.settings.public, 'can_train': trains, 'cannot_train': why,
                     'playground': offered(ctx.settings)}})


def hidden_json(model, net):
    """The answer of /model/hidden for a net: (JSON bytes, the same gzipped)."""
    units = np.round(np.ascontiguousarray(net.weights[0].T, np.float64), 4)  # (hidden, 784)
    body = dump_numpy({'model': model, 'sizes': list(net.sizes), 'units': units})
    return body, gzip.compress(body, 6)


@bp.get('/model/hidden')
@documented(lambda ctx: {
    'summary': "first hidden layer's input weights, one 784-vector per unit",
    'parameters': [{'name': 'pretrained', 'in': 'query', 'required': False,
                    'schema': ctx.pretrained}, NET_QUERY],
    'responses': {'200': answer(ctx.schema('Hidden', HIDDEN)),
                  '400': error('pretrained not listed'), '404': NO_NET}})
async def hidden(request):
    """Built once per net, off the event loop (a 784-800-10 net's answer is megabytes; gzipped
    for every client that accepts it, as browsers do), and written in chunks that wait for the
    client to read."""
    ctx = request.app.ctx
    version = request.get_args(keep_blank_values=True).get('pretrained')
    model, graph, _ = await pick_net(request, query_int(version))
    # A store net's answer is kept with it (unloaded with it); a shipped model's here.
    caches = ctx.nets.nets[model].caches if model in ctx.nets.nets else \
        ctx.hidden_cache.setdefault(model, {})
    cached = caches.get('hidden')
    if cached is None or cached[0] is not graph:
        task = ctx.hidden_tasks.get(id(graph))
        if task is None:  # one build per net, however many ask at once
            task = asyncio.get_running_loop().run_in_executor(
                ctx.decoders, hidden_json, model, graph)
            ctx.hidden_tasks[id(graph)] = task
        try:
            bodies = await asyncio.shield(task)
        finally:
            ctx.hidden_tasks.pop(id(graph), None)
        caches['hidden'] = cached = (graph, *bodies)
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


def changed_net(request):
    """The net a /reset or /pretrain names ("net" in the body or the query; the live net by
    default)."""
    json_body(request, ('net',), '{"net": "live"}')
    return net_name(request)


def replacing(summary, **responses):
    """The operation of /reset or /pretrain, which replace a net (GET and POST alike)."""
    def build(ctx):
        return {'summary': summary(ctx.settings), 'parameters': [NET_QUERY],
                'responses': {'200': OK_TEXT, '404': NO_NET, '409': BUSY, **ctx.changing,
                              **ctx.guarded.get('responses', {}), **responses},
                **ctx.security(ctx.guarded)}
    return build


@bp.route('/reset', methods=['GET', 'POST'])
@documented(replacing(lambda settings: 'live net := untrained '
                      f'{"-".join(map(str, settings.default_sizes))}, learning rate '
                      f'{settings.default_learning_rate}'))
@changes_state
async def reset(request):
    ctx = request.app.ctx
    net = await ctx.nets.get(changed_net(request))
    await replace(request.app, net, 'reset', lambda: fresh_net(ctx.settings), 'reset')
    log.info('%s reset: %s', net.title.removeprefix('the '), net.graph)
    return text('OK')


@bp.route('/pretrain', methods=['GET', 'POST'])
@documented(replacing(lambda settings: 'live net := a copy of the best pretrained model',
                      **{'503': error('no pretrained models installed')}))
@changes_state
async def pretrain(request):
    ctx = request.app.ctx
    net = await ctx.nets.get(changed_net(request))

    def best_copy():
        if ctx.best is None:
            raise Unavailable(
                f'this server has no pretrained models ({MANIFEST} is missing or lists none); '
                'its operator can build them with `make models`.')
        return ctx.pretrained[ctx.best][1].copy()

    await replace(request.app, net, 'load the pretrained model', best_copy, 'pretrain')
    log.info('%s is now a copy of pretrained v%d', net.title, ctx.best)
    return text('OK')
