"""What the page teaches with: where a net goes wrong (/confusion, /confusion/examples) and
how every net reads one drawing (/compare). The hidden activations of one drawing come with
/predict ("return_activations"). The sums are in service/insight.py."""
import asyncio
import logging

from sanic import Blueprint, json

from .. import insight
from ..declare import (
    EXAMPLE_PNG,
    INT,
    NET,
    NET_QUERY,
    NO_NET,
    NOT_JSON,
    NUMBER,
    UNSURE,
    answer,
    documented,
    error,
    request_body,
)
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


NO_DATA = error('no test images: neither the shipped models/mnist-test.npz (`make models`) '
                'nor training data (`make data`)')
DIGIT = {'type': 'integer', 'minimum': 0, 'maximum': 9}
IMAGES = {'type': 'object', 'description': 'exactly which images: how many, from where',
          'properties': {'count': INT, 'source': {'type': 'string'},
                         'file': {'type': 'string'}}}


def pretrained_query(ctx):
    return {'name': 'pretrained', 'in': 'query', 'required': False, 'schema': ctx.pretrained}


@bp.get('/confusion')
@documented(lambda ctx: {
    'summary': "the net's 10x10 confusion matrix on the held-out MNIST test images "
               '(computed once per net)',
    'parameters': [pretrained_query(ctx), NET_QUERY],
    'responses': {'200': answer({'type': 'object', 'properties': {
        'model': {'type': 'string'}, 'images': IMAGES, 'accuracy': NUMBER,
        'matrix': {'type': 'array', 'description': 'row: true digit, column: digit read; '
                   'counts', 'items': {'type': 'array', 'items': INT}},
        'per_class': {'type': 'array', 'items': {'type': 'number', 'nullable': True}}}}),
        '400': error('pretrained not listed'), '404': NO_NET, '503': NO_DATA}})
async def confusion(request):
    _, (model, net) = await chosen(request)
    (_, _, images), result = await confusion_of(request.app, model, net)
    return json({'model': model, 'images': images, 'accuracy': result['accuracy'],
                 'matrix': result['matrix'], 'per_class': result['per_class']})


@bp.get('/confusion/examples')
@documented(lambda ctx: {
    'summary': "one cell's images as 28x28 PNG data URLs, the most confidently read first, "
               'with the confidence of the digit read',
    'parameters': [pretrained_query(ctx),
                   {'name': 'true', 'in': 'query', 'required': True, 'schema': DIGIT},
                   {'name': 'read', 'in': 'query', 'required': True, 'schema': DIGIT},
                   {'name': 'limit', 'in': 'query', 'required': False, 'schema': {
                       'type': 'integer', 'minimum': 1, 'maximum': insight.MAX_EXAMPLES,
                       'default': DEFAULT_EXAMPLES}},
                   NET_QUERY],
    'responses': {'200': answer({'type': 'object', 'properties': {
        'model': {'type': 'string'}, 'true': INT, 'read': INT,
        'count': {'type': 'integer', 'description': 'images in the cell'},
        'images': IMAGES,
        'examples': {'type': 'array', 'maxItems': insight.MAX_EXAMPLES, 'items': {
            'type': 'object', 'properties': {
                'index': {'type': 'integer', 'description': 'row in the test split'},
                'confidence': NUMBER, 'image': {'type': 'string', 'format': 'uri'}}}}}}),
        '400': error('pretrained, true, read or limit is bad'), '404': NO_NET,
        '503': NO_DATA}})
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
@documented(lambda ctx: {
    'summary': 'the drawing (decoded once) read by the live net and every shipped model',
    'requestBody': request_body({
        'type': 'object', 'required': ['image'], 'additionalProperties': False,
        'properties': {'image': {'type': 'string', 'example': EXAMPLE_PNG}, 'net': NET}}),
    'responses': {'200': answer({'type': 'object', 'properties': {
        'agree': {'type': 'boolean', 'description': 'every net read the same digit'},
        'models': {'type': 'array', 'items': {'type': 'object', 'properties': {
            'model': {'type': 'string'}, 'label': INT, 'confidence': NUMBER,
            'unsure': UNSURE}}}}}),
        '400': error('bad body or image'),
        '404': NO_NET,
        '413': error('body over the size limit, or image over 4096x4096 pixels'),
        '415': NOT_JSON,
        '422': error('no digit found (blank image)')}})
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
