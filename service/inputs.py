"""What a request names: the net that reads it (a shipped model, the live net or a private
net) and its image, decoded where its cost allows."""
import asyncio

import imaging

from .errors import BadRequest, PayloadTooLargeImage, Unprocessable
from .nets import is_int
from .parsing import net_name, shown


async def pick_net(request, version, name=None):
    """(label, graph, metrics label) of the net a request names: a shipped model for a listed
    ``pretrained`` version K ("vK"); else the net ``name`` (default: the request's "net", else
    the live net), at its newest version."""
    ctx = request.app.ctx
    if version is None or (is_int(version) and version == 0):
        net = await ctx.nets.get(net_name(request) if name is None else name)
        return net.label, net.graph, net.metric
    if is_int(version) and version in ctx.pretrained:
        return f'v{version}', ctx.pretrained[version][1], f'v{version}'
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
