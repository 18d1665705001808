"""/predict: a drawn digit, read by the live net, a private net or a shipped one."""
from sanic import Blueprint, json

from .. import insight, observability
from ..declare import EXAMPLE_PNG, INT, NET, NO_NET, NUMBER, UNSURE, answer, documented, error
from ..errors import BadRequest
from ..inputs import image_field, pick_net, read_image
from ..parsing import dump_numpy, json_body, shown

bp = Blueprint('prediction')
EXAMPLE = '{"image": "data:image/png;base64,...", "pretrained": null, "net": "live"}'


ACTIVATIONS = {
    'type': 'array', 'description': 'with return_activations: per hidden layer its size, its '
    f'{insight.TOP_UNITS} most active units and, for a layer of at most {insight.FULL_LAYER} '
    'units, every value',
    'items': {'type': 'object', 'properties': {
        'layer': INT, 'size': INT, 'activation': {'type': 'string'},
        'top': {'type': 'array', 'maxItems': insight.TOP_UNITS, 'items': {
            'type': 'object', 'properties': {'unit': INT, 'value': NUMBER}}},
        'values': {'type': 'array', 'maxItems': insight.FULL_LAYER, 'items': NUMBER}}}}
PREDICTION = {
    'type': 'object', 'required': ['label', 'predictions', 'model'],
    'properties': {
        'label': {'type': 'integer', 'minimum': 0, 'maximum': 9},
        'predictions': {'type': 'array', 'minItems': 10, 'maxItems': 10,
                        'items': {'type': 'object',
                                  'properties': {'label': INT, 'confidence': NUMBER}}},
        'model': {'type': 'string', 'example': 'live'},
        'input': {'type': 'array', 'description': 'with return_input: 28 rows of 28 floats in '
                  '[0, 1], what the net saw', 'items': {'type': 'array', 'items': NUMBER}},
        'unsure': UNSURE, 'activations': ACTIVATIONS}}


def predict_request(ctx):
    return {
        'type': 'object', 'required': ['image'], 'additionalProperties': False,
        'properties': {
            'image': {'type': 'string', 'description': 'base64 PNG, JPEG, WebP or BMP '
                      '(standard or URL-safe, data: URL prefix optional)',
                      'example': EXAMPLE_PNG},
            'pretrained': {**ctx.pretrained, 'nullable': True,
                           'enum': [None, *ctx.pretrained['enum']]},
            'return_input': {'type': 'boolean', 'default': False},
            'return_activations': {'type': 'boolean', 'default': False},
            'net': NET}}


@bp.post('/predict')
@documented(lambda ctx: {
    'summary': 'classify a drawn digit',
    'requestBody': {'required': True, 'content': {'application/json': {
        'schema': ctx.schema('PredictRequest', predict_request(ctx))}}},
    'responses': {
        '200': answer(ctx.schema('Prediction', PREDICTION)),
        '400': error('bad body, image, pretrained or return_input'),
        '404': NO_NET,
        '413': error('body over the size limit, or image over 4096x4096 pixels'),
        '422': error('no digit found (blank image)')}})
async def predict(request):
    body = json_body(request, ('image', 'pretrained', 'return_input', 'return_activations',
                               'net'), EXAMPLE)
    if body is None:
        raise BadRequest(f'the body is empty; expected JSON like {EXAMPLE}.')
    image = image_field(body)
    model, net, metric = await pick_net(request, body.get('pretrained'))
    flags = {name: body.get(name, False) for name in ('return_input', 'return_activations')}
    for name, value in flags.items():
        if not isinstance(value, bool):
            raise BadRequest(f'{name} must be true or false, got {shown(value)}.')
    _, x = await read_image(request.app, image)
    label, outputs = net.predict(x.reshape(-1))
    observability.predicted(request.app, metric)
    answer = {'label': label, 'model': model,
              'predictions': [{'label': k, 'confidence': c}
                              for k, c in enumerate(outputs[:, 0])],
              'unsure': insight.unsure(x, float(outputs[label, 0]))}
    if flags['return_input']:
        answer['input'] = x
    if flags['return_activations']:
        answer['activations'] = insight.activations(net, x)
    return json(answer, dumps=dump_numpy)
