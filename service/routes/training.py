"""/train (one job at a time, across workers), its status and its event stream."""
from sanic import Blueprint, json

from .. import observability
from ..errors import BadRequest
from ..guard import changes_state
from ..parsing import json_body, parse_epochs, query_int, shown
from ..training import current_status, sse, start_job

bp = Blueprint('training')


@bp.route('/train', methods=['GET', 'POST'])
@changes_state
async def train(request):
    settings = request.app.ctx.settings
    body = json_body(request, ('epochs', 'samples'), '{"epochs": 5, "samples": false}')
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
    return json(await start_job(request.app, epochs, samples))


@bp.get('/train/status')
async def train_status(request):
    return json(current_status(request.app))


@bp.get('/train/events')
async def train_events(request):
    streams = request.app.ctx.streams
    queue = streams.open()  # 503 past --max-streams
    observability.stream(request.app, 1)
    try:
        response = await request.respond(
            content_type='text/event-stream',
            headers={'Cache-Control': 'no-cache', 'X-Accel-Buffering': 'no'})
        await response.send(sse('status', current_status(request.app)))
        while (item := await queue.get()) is not None:
            await response.send(item)
    finally:
        streams.close(queue)
        observability.stream(request.app, -1)
    await response.eof()
