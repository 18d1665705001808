"""What the page teaches with: where a net goes wrong (/confusion, /confusion/examples) and
how every net reads one drawing (/compare). The hidden activations of one drawing come with
/predict ("return_activations"). The sums are in service/insight.py."""
import asyncio
import logging

from sanic import Blueprint, json

from .. import insight
from ..errors import BadRequest, Unavailable
from ..inputs import image_field, pick_net, read_image
from ..nets import is_int
from ..parsing import dump_numpy, json_body, query_int, shown

log = logging.getLogger(__name__)
bp = Blueprint('insight')
EXAMPLE = '{"image": "data:image/png;base64,..."}'
DEFAULT_EXAMPLES = 24


async def shared(app, key, work, *args):
    """``work(*args)`` in the decoding pool, run once however many requests ask for ``key``
    at the same time."""
    ctx = app.ctx
    task = ctx.insight_tasks.get(key)
    if task is None:
        task = asyncio.get_running_loop().run_in_executor(ctx.decoders, work, *args)
        ctx.insight_tasks[key] = task
        task.add_done_callback(lambda _: ctx.insight_tasks.pop(key, None))
    return await asyncio.shield(task)


async def held_out(app):
    """The images confusion matrices are measured on, read once per version of their file:
    MNIST's official test images shipped beside the models (insight.official_test), else the
    training file's test split (insight.held_out); 503 in plain words when there is neither.
    No answer names a server path."""
    ctx, settings = app.ctx, app.ctx.settings
    shipped = settings.models_dir / insight.TEST_IMAGES_FILE
    path, read = ((shipped, insight.official_test) if shipped.is_file()
                  else (settings.data_path, insight.held_out))
    if not path.is_file():
        raise Unavailable(f'this server has no test images to measure the nets on: neither '
                          f'the shipped {insight.TEST_IMAGES_FILE} nor training data. Its '
                          'operator can add them with `make models` or `make data`.')
    try:
        stat = path.stat()
        version = (str(path), stat.st_mtime_ns, stat.st_size)
        if ctx.held_out is None or ctx.held_out[0] != version:
            ctx.held_out = version, await shared(app, ('held-out', version), read, path)
    except insight.READ_ERRORS as e:
        log.warning('test images %s unusable: %s', path, e)
        raise Unavailable(f'the test images ({path.name}) cannot be read; the server\'s '
                          'operator can rebuild them with `make models` or `make data`.') \
            from None
    return ctx.held_out


async def confusion_of(app, model, net):
    """(held-out version, (X, y, description), the net's confusion result), computed once
    per net and training file: a new live net is a new object, so it is computed anew."""
    ctx = app.ctx
    version, data = await held_out(app)
    # A store net's matrix is kept with it (unloaded with it); a shipped model's here.
    caches = ctx.nets.nets[model].caches if model in ctx.nets.nets else ctx.confusion
    cached = caches.get(model)
    if cached is None or cached[0] is not net or cached[1] != version:
        result = await shared(app, ('confusion', model, id(net), version), insight.confusion,
                              net, *data[:2])
        caches[model] = cached = net, version, result
        log.info('confusion matrix of %s: accuracy %.4f on %d images', model,
                 result['accuracy'], data[2]['count'])
    return data, cached[2]


async def chosen(request):
    query = request.get_args(keep_blank_values=True)
    model, net, _ = await pick_net(request, query_int(query.get('pretrained')))
    return query, (model, net)


def digit(query, name):
    value = query_int(query.get(name))
    if not is_int(value) or not 0 <= value <= 9:
        got = 'nothing' if value is None else shown(value)
        raise BadRequest(f'{name} must be a digit from 0 to 9, got {got}.')
    return value


@bp.get('/confusion')
async def confusion(request):
    _, (model, net) = await chosen(request)
    (_, _, images), result = await confusion_of(request.app, model, net)
    return json({'model': model, 'images': images, 'accuracy': result['accuracy'],
                 'matrix': result['matrix'], 'per_class': result['per_class']})


@bp.get('/confusion/examples')
async def confusion_examples(request):
    query, (model, net) = await chosen(request)
    true, read = digit(query, 'true'), digit(query, 'read')
    limit = query_int(query.get('limit', DEFAULT_EXAMPLES))
    if not is_int(limit) or not 1 <= limit <= insight.MAX_EXAMPLES:
        raise BadRequest(f'limit must be an integer from 1 to {insight.MAX_EXAMPLES}, got '
                         f'{shown(limit)}.')
    (X, y, images), result = await confusion_of(request.app, model, net)
    count, found = await asyncio.get_running_loop().run_in_executor(
        request.app.ctx.decoders, insight.examples, result, X, y, true, read, limit)
    return json({'model': model, 'true': true, 'read': read, 'count': count,
                 'images': images, 'examples': found})


@bp.post('/compare')
async def compare(request):
    """The drawing, decoded once, read by every shipped model and the live net (or the net
    the body names)."""
    app = request.app
    body = json_body(request, ('image', 'net'), EXAMPLE)
    if body is None:
        raise BadRequest(f'the body is empty; expected JSON like {EXAMPLE}.')
    image = image_field(body)
    nets = [await pick_net(request, None)] + [await pick_net(request, v)
                                              for v in sorted(app.ctx.pretrained)]
    _, x = await read_image(app, image)
    x = x.reshape(-1)
    rows = []
    for model, net, _ in nets:
        label, outputs = net.predict(x)
        confidence = float(outputs[label, 0])
        rows.append({'model': model, 'label': label, 'confidence': confidence,
                     'unsure': insight.unsure(x, confidence)})
    labels = {row['label'] for row in rows}
    return json({'models': rows, 'agree': len(labels) == 1}, dumps=dump_numpy)
