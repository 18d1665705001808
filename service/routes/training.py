"""/train (a job in the training queue, one per net), its status and its event stream."""
from sanic import Blueprint, json

from .. import observability
from ..declare import (
    BUSY,
    NET,
    NET_QUERY,
    NO_NET,
    NUMBER,
    answer,
    documented,
    error,
    ref,
    request_body,
)
from ..errors import BadRequest
from ..guard import changes_state
from ..parsing import json_body, net_name, parse_epochs, query_int, shown
from ..playground import TRAINING_OPTIONS, check_work, training_options
from ..streams import sse
from ..training import current_status, start_job

bp = Blueprint('training')


FIGURES = {
    'type': 'object', 'description': 'validation accuracy on MNIST, on the held-out stored '
    "samples (every fifth by id; null when there are none) and on MNIST's official test "
    'images, overall and per digit (null when the server has none)',
    'properties': {'mnist': NUMBER, 'samples': {'type': 'number', 'nullable': True},
                   'samples_count': {'type': 'integer'},
                   'samples_right': {'type': 'integer', 'nullable': True},
                   'test': {'type': 'number', 'nullable': True},
                   'test_per_class': {'type': 'array', 'items': NUMBER, 'nullable': True},
                   'test_count': {'type': 'integer'}}}
GATE = {
    'type': 'object', 'description': 'the gate the trained net passed, or failed: then it is '
    'kept as a version that is not current (POST /nets/{name}/promote makes it live)',
    'properties': {'passed': {'type': 'boolean'}, 'reason': {'type': 'string'},
                   'test': {'type': 'object', 'nullable': True},
                   'worst_class': {'type': 'object', 'nullable': True},
                   'classes_failed': {'type': 'array', 'items': {'type': 'integer'}},
                   'samples': {'type': 'object', 'nullable': True},
                   'tolerances': {'type': 'object'}}}


def train_operations(ctx):
    settings = ctx.settings
    max_epochs = settings.max_epochs
    epochs = {'type': 'integer', 'minimum': 1, 'maximum': max_epochs, 'default': 1}
    ctx.schema('Figures', FIGURES)
    ctx.schema('Gate', GATE)
    result = ctx.schema('TrainResult', {
        'type': 'object',
        'properties': {
            'accuracy': {'type': 'integer', 'description': 'correct of '
                         f'{settings.score_samples} random validation samples'},
            'validation_accuracy': {'type': 'number', 'description': 'fraction of the whole '
                                    'validation split'},
            'epochs': {'type': 'integer', 'description': 'total epochs trained'},
            'seconds': NUMBER, 'samples': {'type': 'boolean'},
            'version': {'type': 'integer', 'description': 'the version the training made'},
            'promoted': {'type': 'boolean', 'description': 'whether that version passed the '
                         'gate and answers now'},
            'gate': ref('Gate'),
            'before': ref('Figures'), 'after': ref('Figures')}})
    train = {
        'summary': 'train the live net (a copy, swapped in when complete)',
        'responses': {
            '200': answer(result, 'after training'),
            '400': error(f'epochs is not an integer from 1 to {max_epochs}, or a bad option '
                         '(the message names it)'),
            '404': NO_NET,
            '409': BUSY,
            **ctx.changing,
            '503': error('no training data (`make data`), or the net could not be saved'),
            **ctx.guarded.get('responses', {}),
        },
        **ctx.security(ctx.guarded),
    }
    return {
        'get': {**train, 'parameters': [
            {'name': 'epochs', 'in': 'query', 'required': False, 'schema': epochs},
            {'name': 'samples', 'in': 'query', 'required': False,
             'schema': {'type': 'string', 'enum': ['0', '1', 'true', 'false']},
             'description': 'also train on the stored samples'},
            NET_QUERY]},
        'post': {**train, 'requestBody': request_body({
            'type': 'object', 'additionalProperties': False,
            'properties': {'epochs': epochs, 'samples': {
                'type': 'boolean', 'default': False,
                'description': 'also train on the stored samples: a private net '
                               'adapts to its own, the live net learns from everyone\'s '
                               f'({settings.sample_share:.0%} of every batch)'},
                'net': NET,
                'options': {'type': 'object', 'description': 'training options applied to '
                            'the copy that trains and kept in the version it saves: '
                            f'{", ".join(TRAINING_OPTIONS)} (docs/api.md, "Training '
                            'options")'}}},
            required=False)},
    }


@bp.route('/train', methods=['GET', 'POST'])
@documented(train_operations)
@changes_state
async def train(request):
    settings = request.app.ctx.settings
    body = json_body(request, ('epochs', 'samples', 'net', 'options'),
                     '{"epochs": 5, "samples": false, "net": "live", '
                     '"options": {"learning_rate": 0.1}}')
    options = {}
    if body is not None:
        epochs, samples = body.get('epochs', 1), body.get('samples', False)
        options = body.get('options', {})
    else:
        query = request.get_args(keep_blank_values=True)  # "?epochs=" is an error, not 1
        epochs = query_int(query.get('epochs', 1))
        samples = {'1': True, '0': False, 'true': True, 'false': False}.get(
            query.get('samples', '0'), query.get('samples'))
    epochs = parse_epochs(epochs, settings.max_epochs)
    if not isinstance(samples, bool):
        raise BadRequest(f'samples must be true or false (1 or 0 in a query), got '
                         f'{shown(samples)}.')
    net = await request.app.ctx.nets.get(net_name(request))
    options = training_options(options, net.graph)
    check_work(net.graph, epochs, options, settings)
    return json(await start_job(request.app, net, epochs, samples, options))


@bp.get('/train/status')
@documented(lambda ctx: {'summary': 'progress of the current or last job',
                         'parameters': [NET_QUERY],
                         'responses': {'200': answer(ref('TrainStatus')), '404': NO_NET}})
async def train_status(request):
    net = await request.app.ctx.nets.get(net_name(request), wait=False)
    return json(await current_status(request.app, net))


@bp.get('/train/events')
@documented(lambda ctx: {
    'summary': 'Server-Sent Events: "status" first, then per job "progress" (~every 100 ms), '
               '"epoch" (loss, val_accuracy, train_accuracy, val_loss, learning_rate, '
               'confusion, units: docs/api.md) and "done"',
    'parameters': [NET_QUERY],
    'responses': {'200': {'description': 'an event stream that stays open',
                          'content': {'text/event-stream': {}}},
                  '404': NO_NET,
                  '503': error('too many event streams are open')}})
async def train_events(request):
    streams = request.app.ctx.streams
    net = await request.app.ctx.nets.get(net_name(request), wait=False)
    queue = streams.open(net.name)  # 503 past --max-streams
    observability.stream(request.app, 1)
    try:
        response = await request.respond(
            content_type='text/event-stream',
            headers={'Cache-Control': 'no-cache', 'X-Accel-Buffering': 'no'})
        await response.send(sse('status', await current_status(request.app, net)))
        while (item := await queue.get()) is not None:
            await response.send(item)
    finally:
        streams.close(queue)
        observability.stream(request.app, -1)
    await response.eof()
