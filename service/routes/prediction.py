"""/predict: a drawn digit, read by the live net, a private net or a shipped one."""
from sanic import Blueprint, json

from .. import insight, observability
from ..errors import BadRequest
from ..inputs import image_field, pick_net, read_image
from ..parsing import dump_numpy, json_body, shown

bp = Blueprint('prediction')
EXAMPLE = '{"image": "data:image/png;base64,...", "pretrained": null, "net": "live"}'


@bp.post('/predict')
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
