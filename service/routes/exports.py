"""Taking a net away: GET /nets/{name}/export and GET /models/{k}/export, ?format=npz (the
library's file), onnx or card (its model card, Markdown), as a download. The files are built
off the event loop (service/exporting.py) and written in chunks, a few at a time, like
/model/hidden's megabytes."""
import asyncio
import logging

from sanic import Blueprint

from ..declare import NO_NET, documented, error
from ..errors import BadRequest, Busy, Missing
from ..exporting import FORMATS, model_card, to_npz, to_onnx
from ..parsing import shown
from ..protocol import send_chunked
from ..store import LIVE

log = logging.getLogger(__name__)
bp = Blueprint('exports')


def export_operation(what, parameter):
    def build(ctx):
        return {
            'summary': f'download {what}: ?format=npz (the library\'s file, '
                       'Graph.from_file loads it), onnx (input "input" FP32 [n, 784], output '
                       '"confidences" FP32 [n, 10], opset 13) or card (its model card, '
                       'Markdown)',
            'parameters': [parameter(ctx), {
                'name': 'format', 'in': 'query', 'required': False,
                'schema': {'type': 'string', 'enum': list(FORMATS), 'default': 'npz'}}],
            'responses': {
                '200': {'description': 'the file, as an attachment', 'content': {
                    'application/octet-stream': {'schema': {'type': 'string',
                                                            'format': 'binary'}},
                    'text/markdown': {'schema': {'type': 'string'}}}},
                '400': error('an unknown format'), '404': NO_NET,
                '503': error('too many downloads at once')}}
    return build


def export_format(request):
    chosen = request.get_args(keep_blank_values=True).get('format', 'npz')
    if chosen not in FORMATS:
        raise BadRequest(f'format must be one of {", ".join(FORMATS)} (npz: the library\'s '
                         f'file, onnx: ONNX, card: the model card); got {shown(chosen)}.')
    return chosen


def build(graph, chosen, facts):
    """The file's bytes (in a thread)."""
    if chosen == 'npz':
        return to_npz(graph)
    if chosen == 'onnx':
        return to_onnx(graph, facts['file'])
    return model_card(graph, facts).encode()


async def send_export(request, graph, chosen, facts):
    """Build the file off the loop and send it as an attachment; a few at a time per worker
    (the others wait up to --write-timeout, then 503)."""
    ctx = request.app.ctx
    try:
        async with asyncio.timeout(ctx.settings.write_timeout):
            await ctx.large_answers.acquire()
    except TimeoutError:
        raise Busy('too many clients are downloading nets right now; try again in a few '
                   'seconds.', retry_after=5) from None
    try:
        body = await asyncio.get_running_loop().run_in_executor(
            ctx.decoders, build, graph, chosen, facts)
        content_type, extension = FORMATS[chosen]
        await send_chunked(request, body, content_type, {
            'Content-Disposition': f'attachment; filename="{facts["file"]}.{extension}"',
            'Cache-Control': 'no-store'})
    finally:
        ctx.large_answers.release()


NAME = {'name': 'name', 'in': 'path', 'required': True,
        'schema': {'type': 'string', 'description': '"live" or a private net\'s name'}}


@bp.get('/nets/<name>/export')
@documented(export_operation('a net (the live one or a private one)', lambda ctx: NAME))
async def export_net(request, name):
    ctx = request.app.ctx
    chosen = export_format(request)
    net = await ctx.nets.get(name)
    graph, meta = net.graph, net.meta  # this version, whatever is saved meanwhile
    version = meta.get('version') or 1
    if name == LIVE:
        about, facts = {}, {'title': f'The shared net, version {version}', 'kind': 'live',
                            'file': f'live-v{version}'}
    else:
        about = await asyncio.get_running_loop().run_in_executor(None, ctx.store.about,
                                                                 name) or {}
        facts = {'title': f'A private net, version {version}', 'kind': 'private',
                 'file': f'net-{name[:6]}-v{version}'}  # never the whole name: it is the key
    facts |= {'version': version, 'from': about.get('from'),
              'created': meta.get('created') or about.get('created'),
              'validation_accuracy': meta.get('validation_accuracy'),
              'trained_on_samples': meta.get('trained_on_samples')}
    log.info('%s version %s exported as %s', net.title, version, chosen)
    await send_export(request, graph, chosen, facts)


@bp.get('/models/<version:int>/export')
@documented(export_operation('a shipped model', lambda ctx: {
    'name': 'version', 'in': 'path', 'required': True,
    'schema': {'type': 'integer', 'enum': ctx.versions or [1]}}))
async def export_model(request, version):
    ctx = request.app.ctx
    chosen = export_format(request)
    if version not in ctx.pretrained:
        raise Missing(f'there is no shipped model v{version}: /models lists '
                      f'{sorted(ctx.pretrained)}.')
    entry, graph = ctx.pretrained[version]
    facts = {'title': f'better-tensorflow shipped model v{version}', 'kind': 'shipped',
             'file': f'model-v{version}', 'version': version, 'entry': entry}
    await send_export(request, graph, chosen, facts)
