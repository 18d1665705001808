"""/predict: a drawn digit, read by the live net or a shipped one."""
import asyncio

import orjson
from sanic import Blueprint, json

import imaging

from .. import insight, observability
from ..errors import BadRequest, PayloadTooLargeImage, Unprocessable
from ..nets import is_int, newest_live, sync_live
from ..parsing import json_body, shown

bp = Blueprint('prediction')
EXAMPLE = '{"image": "data:image/png;base64,...", "pretrained": null}'


def pick_net(app, version):
    """("live", live net) for None/0, ("vK", pretrained net) for a listed version K."""
    ctx = app.ctx
    if version is None or (is_int(version) and version == 0):
        sync_live(app)
        return 'live', ctx.live
    if is_int(version) and version in ctx.pretrained:
        return f'v{version}', ctx.pretrained[version][1]
    listed = (f'one of {sorted(ctx.pretrained)}' if ctx.pretrained else
              'absent (no pretrained models are installed)')
    raise BadRequest(f'pretrained must be {listed}, or null/0 for the live net; '
                     f'got {shown(version)}.')


async def read_image(app, image, max_bytes=None, why=''):
    """(the image's bytes, imaging.prepare of them) for base64 text. A small image (what
    the page sends) whose decoding cost is bounded by its declared size (imaging.cheap_to_decode)
    is prepared on the event loop, where it costs less than a thread hop; every other image in
    the decoding pool. Errors are the statuses of /predict; over ``max_bytes`` (checked before
    any pixel is decoded) 413, saying ``why``."""
    settings, loop = app.ctx.settings, asyncio.get_running_loop()
    try:
        if len(image) <= settings.inline_text:
            data = imaging.decode_base64(image)
        else:
            data = await loop.run_in_executor(app.ctx.decoders, imaging.decode_base64, image)
        if max_bytes is not None and len(data) > max_bytes:
            raise PayloadTooLargeImage(f'the image is {len(data)} bytes; {why}, at most '
                                       f'{max_bytes} bytes.')
        kind, width, height = imaging.image_size(data)
        # On the loop only what is small in pixels and in bytes (a drawing is a few KB): a
        # 28x28 image padded with megabytes of chunks a decoder skips still costs its bytes.
        if imaging.cheap_to_decode(kind, width, height) and len(data) <= settings.inline_text:
            return data, imaging.prepare(data)
        return data, await loop.run_in_executor(app.ctx.decoders, imaging.prepare, data)
    except imaging.NoDigitError as e:
        raise Unprocessable(str(e)) from None
    except imaging.ImageTooLarge as e:
        raise PayloadTooLargeImage(str(e)) from None
    except imaging.ImageError as e:
        raise BadRequest(str(e)) from None


def image_field(body):
    image = body.get('image')
    if not isinstance(image, str):
        raise BadRequest('image must be a string: a base64 PNG, JPEG, WebP or BMP, '
                         'e.g. "data:image/png;base64,iVBOR..."; got '
                         f'{"nothing" if image is None else type(image).__name__}.')
    return image


def dump_numpy(data):
    """JSON of data holding numpy arrays and floats, each number in the fewest digits that
    read back to the same value."""
    return orjson.dumps(data, option=orjson.OPT_SERIALIZE_NUMPY)


@bp.post('/predict')
async def predict(request):
    body = json_body(request, ('image', 'pretrained', 'return_input', 'return_activations'),
                     EXAMPLE)
    if body is None:
        raise BadRequest(f'the body is empty; expected JSON like {EXAMPLE}.')
    image = image_field(body)
    await newest_live(request.app)  # right after another server's change: the new net
    model, net = pick_net(request.app, body.get('pretrained'))
    flags = {name: body.get(name, False) for name in ('return_input', 'return_activations')}
    for name, value in flags.items():
        if not isinstance(value, bool):
            raise BadRequest(f'{name} must be true or false, got {shown(value)}.')
    _, x = await read_image(request.app, image)
    label, outputs = net.predict(x.reshape(-1))
    observability.predicted(request.app, model)
    answer = {'label': label, 'model': model,
              'predictions': [{'label': k, 'confidence': c}
                              for k, c in enumerate(outputs[:, 0])],
              'unsure': insight.unsure(x, float(outputs[label, 0]))}
    if flags['return_input']:
        answer['input'] = x
    if flags['return_activations']:
        answer['activations'] = insight.activations(net, x)
    return json(answer, dumps=dump_numpy)
