"""/train (a job in the training queue, one per net), its status and its event stream."""
from sanic import Blueprint, json

from .. import observability
from ..errors import BadRequest
from ..guard import changes_state
from ..parsing import json_body, net_name, parse_epochs, query_int, shown
from ..streams import sse
from ..training import current_status, start_job

bp = Blueprint('training')


@bp.route('/train', methods=['GET', 'POST'])
@changes_state
async def train(request):
    settings = request.app.ctx.settings
    body = json_body(request, ('epochs', 'samples', 'net'),
                     '{"epochs": 5, "samples": false, "net": "live"}')
    if body is not None:
        epochs, samples = body.get('epochs', 1), body.get('samples', False)
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
    return json(await start_job(request.app, net, epochs, samples))


@bp.get('/train/status')
async def train_status(request):
    net = await request.app.ctx.nets.get(net_name(request), wait=False)
    return json(await current_status(request.app, net))


@bp.get('/train/events')
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
