"""/train (one job at a time, across workers), its status and its event stream."""
from sanic import Blueprint, json

from ..guard import changes_state
from ..parsing import json_body, parse_epochs, query_int
from ..training import current_status, sse, start_job

bp = Blueprint('training')


@bp.route('/train', methods=['GET', 'POST'])
@changes_state
async def train(request):
    settings = request.app.ctx.settings
    body = json_body(request, ('epochs',), '{"epochs": 5}')
    query = request.get_args(keep_blank_values=True)  # "?epochs=" is an error, not 1
    value = body.get('epochs', 1) if body is not None else query_int(query.get('epochs', 1))
    epochs = parse_epochs(value, settings.max_epochs)
    return json(await start_job(request.app, epochs))


@bp.get('/train/status')
async def train_status(request):
    return json(current_status(request.app))


@bp.get('/train/events')
async def train_events(request):
    streams = request.app.ctx.streams
    queue = streams.open()  # 503 past --max-streams
    try:
        response = await request.respond(
            content_type='text/event-stream',
            headers={'Cache-Control': 'no-cache', 'X-Accel-Buffering': 'no'})
        await response.send(sse('status', current_status(request.app)))
        while (item := await queue.get()) is not None:
            await response.send(item)
    finally:
        streams.close(queue)
    await response.eof()
