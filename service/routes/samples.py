"""/samples: users' drawings with the label they gave, kept to train on (see samples.py), each
with the net it was kept with ("net": the live net by default). Every route holds users'
drawings: guarded like the routes that change state (a private net's by its name)."""
import asyncio
import io
import logging

import cv2
import numpy as np
from sanic import Blueprint, empty, json, raw

import imaging

from ..declare import (
    EXAMPLE_PNG,
    INT,
    NET,
    NET_QUERY,
    NO_NET,
    NOT_JSON,
    answer,
    documented,
    error,
    request_body,
)
from ..errors import (
    BadRequest,
    Missing,
    clip,
)
from ..guard import changes_state, holds_user_data, token_given
from ..inputs import image_field, pick_net, read_image
from ..judge import judge_one, listed
from ..limits import take_sample_slot
from ..nets import is_int
from ..parsing import json_body, net_name, query_int, shown
from ..protocol import send_chunked
from ..samples import VERDICTS, in_store
from ..store import LIVE

log = logging.getLogger(__name__)
bp = Blueprint('samples')
EXAMPLE = '{"image": "data:image/png;base64,...", "label": 7, "net": "live", "share": false}'
MAX_LIMIT = 500
MAX_ID = 2 ** 63 - 1
MEDIA = {'PNG': 'image/png', 'JPEG': 'image/jpeg', 'WebP': 'image/webp', 'BMP': 'image/bmp'}


SAMPLE = {'type': 'object',
          'properties': {'id': INT, 'label': INT, 'predicted': INT, 'model': {'type': 'string'},
                         'created': {'type': 'string', 'format': 'date-time'},
                         'shared': {'type': 'boolean'},
                         'suspect': {'type': 'boolean', 'description':
                                     'held back from the shared net\'s training: judged '
                                     'mislabelled and not approved, or rejected'},
                         'reason': {'type': 'string', 'description': 'why, when suspect'},
                         'reads_as': INT,
                         'review': {'type': 'string', 'nullable': True,
                                    'enum': ['approved', 'rejected', None]}}}
SAMPLE_ID = {'name': 'sample', 'in': 'path', 'required': True,
             'schema': {'type': 'integer', 'minimum': 1}}
UNREACHABLE = error('the sample store is unreachable')
SUSPECT_QUERY = {'name': 'suspect', 'in': 'query', 'required': False,
                 'description': '1: only the drawings held back from the shared net (judged '
                                'mislabelled and not approved, or rejected); 0: only the others',
                 'schema': {'type': 'string', 'enum': ['0', '1']}}


def user_data(ctx, operation):
    """``operation`` behind the guard of users' drawings: the one of the routes that change
    state, its 403 without a token plainer."""
    guard = ctx.guarded if ctx.settings.token is not None else {**ctx.guarded, 'responses': {
        **ctx.guarded['responses'], '403': error('a cross-site request')}}
    return {**operation, 'responses': {**operation['responses'], **guard['responses']},
            **ctx.security(guard)}


def sample_id(value):
    if not 1 <= value <= MAX_ID:
        raise Missing(f'there is no sample {clip(str(value))} (GET /samples lists them).')
    return value


@bp.post('/samples')
@documented(lambda ctx: user_data(ctx, {
    'summary': 'store a drawing with its label (the live net reads it too)',
    'requestBody': request_body({
        'type': 'object', 'required': ['image', 'label'], 'additionalProperties': False,
        'properties': {
            'image': {'type': 'string', 'example': EXAMPLE_PNG},
            'label': {'type': 'integer', 'minimum': 0, 'maximum': 9},
            'pretrained': {**ctx.pretrained, 'nullable': True,
                           'enum': [None, *ctx.pretrained['enum']]},
            'net': NET,
            'share': {'type': 'boolean', 'default': False,
                      'description': 'a private net\'s drawing: share it with the live net '
                                     'too'}}}),
    'responses': {'201': answer(ctx.schema('Sample', SAMPLE), 'stored'),
                  '200': answer(ctx.schema('Sample', SAMPLE), 'the same image was stored '
                                                              'before: its sample'),
                  '400': error('bad body, image or label'),
                  '404': NO_NET,
                  '413': error('image over the size limits'),
                  '415': NOT_JSON,
                  '422': error('no digit found (blank image)'),
                  '429': error('this address stores drawings past --sample-rate, '
                               '--sample-burst or --samples-per-hour (Retry-After)'),
                  '503': UNREACHABLE,
                  '507': error(f'the store holds {ctx.settings.max_samples} samples, or the '
                               'disk is full')}}))
@holds_user_data
async def add_sample(request):
    app, settings = request.app, request.app.ctx.settings
    if settings.token is None or token_given(request, settings.token) is not True:
        take_sample_slot(app, request.ip or 'unknown')
    body = json_body(request, ('image', 'label', 'pretrained', 'net', 'share'), EXAMPLE)
    if body is None:
        raise BadRequest(f'the body is empty; expected JSON like {EXAMPLE}.')
    label = body.get('label')
    if not is_int(label) or not 0 <= label <= 9:
        raise BadRequest(f'label must be an integer from 0 to 9 (the digit drawn), got '
                         f'{shown(label)}.')
    share = body.get('share', False)
    if not isinstance(share, bool):
        raise BadRequest(f'share must be true or false (share the drawing with the live net), '
                         f'got {shown(share)}.')
    image = image_field(body)
    owner = await app.ctx.nets.get(net_name(request))  # the net it is kept with
    model, net, _ = await pick_net(request, body.get('pretrained'))
    original, x = await read_image(
        app, image, settings.max_sample_bytes,
        'a sample keeps the drawing as submitted (the page sends a few KB)')
    # what is kept and served back: the pixels' chunks of a PNG, none of a sender's others
    original = imaging.strip_metadata(original)
    pixels = np.rint(x.reshape(-1) * 255).astype(np.uint8)
    predicted, _ = net.predict(x.reshape(-1))
    judgement = judge_one(app, owner, pixels, label)  # by nets that never learned from it
    sample, created = await in_store(app, 'add', original, pixels, label, predicted, model,
                                     owner.name, share, judgement)
    if created:
        log.info('sample %d stored: a %d, read as %d by %s%s', sample['id'], label, predicted,
                 model, ', suspect' if sample['judged_suspect'] else '')
    return json(listed(sample), status=201 if created else 200)


def held_query(query):
    """?suspect=1: only the drawings held back (True), 0: only the others (False), else None."""
    suspect = query.get('suspect')
    if suspect not in (None, '0', '1'):
        raise BadRequest(f'suspect must be 1 (only the held-back drawings) or 0 (only the '
                         f'others), got {shown(suspect)}.')
    return None if suspect is None else suspect == '1'


def query_number(query, name, default, low, high):
    value = query_int(query.get(name, default))
    if not is_int(value) or not low <= value <= high:
        raise BadRequest(f'{name} must be an integer from {low} to {high}, got {shown(value)}.')
    return value


@bp.get('/samples')
@documented(lambda ctx: user_data(ctx, {
    'summary': 'the stored samples, newest first',
    'parameters': [
        {'name': 'label', 'in': 'query', 'required': False,
         'schema': {'type': 'integer', 'minimum': 0, 'maximum': 9}},
        {'name': 'offset', 'in': 'query', 'required': False,
         'schema': {'type': 'integer', 'minimum': 0, 'default': 0}},
        {'name': 'limit', 'in': 'query', 'required': False,
         'schema': {'type': 'integer', 'minimum': 1, 'maximum': MAX_LIMIT, 'default': 50}},
        SUSPECT_QUERY, NET_QUERY],
    'responses': {'200': answer({'type': 'object', 'properties': {
        'total': INT, 'samples': {'type': 'array', 'items': ctx.schema('Sample', SAMPLE)}}}),
        '400': error('bad label, offset, limit or suspect'), '404': NO_NET,
        '503': UNREACHABLE}}))
@holds_user_data
async def list_samples(request):
    query = request.get_args(keep_blank_values=True)
    label = query.get('label')
    if label is not None:
        label = query_number(query, 'label', None, 0, 9)
    offset = query_number(query, 'offset', 0, 0, 10 ** 9 - 1)  # query_int reads 9 digits
    limit = query_number(query, 'limit', 50, 1, MAX_LIMIT)
    held = held_query(query)
    net = await request.app.ctx.nets.get(net_name(request), wait=False)
    total, rows = await in_store(request.app, 'list', label, offset, limit, net.name, held)
    return json({'total': total, 'samples': [listed(row) for row in rows]})


@bp.post('/samples/<sample:int>/review')
@documented(lambda ctx: {
    'summary': "the shared net's review of a drawing: approve it (it trains the live net even "
               'if judged mislabelled) or reject it (it never does)',
    'parameters': [SAMPLE_ID],
    'requestBody': request_body({
        'type': 'object', 'required': ['verdict'], 'additionalProperties': False,
        'properties': {'verdict': {'type': 'string', 'enum': sorted(VERDICTS)}}}),
    'responses': {'200': answer(ctx.schema('Sample', SAMPLE), 'the sample as reviewed'),
                  '400': error('bad verdict'), '404': error('no such sample of the live net'),
                  '415': NOT_JSON, '503': UNREACHABLE, **ctx.guarded['responses']},
    **ctx.security(ctx.guarded)})
@changes_state
async def review_sample(request, sample):
    """Approve or reject a drawing the live net sees (its own or a shared one): a change of
    what the shared net learns from, guarded like its other changes (the token)."""
    example = '{"verdict": "approve"}'
    body = json_body(request, ('verdict', 'net'), example)
    if net_name(request) != LIVE:
        raise BadRequest('net: only the live net\'s drawings are reviewed; a private net trains '
                         'on all of its owner\'s drawings (delete one with DELETE '
                         '/samples/{id}?net=<name>).')
    verdict = None if body is None else body.get('verdict')
    if not isinstance(verdict, str) or verdict not in VERDICTS:
        raise BadRequest(f'verdict must be "approve" or "reject", got {shown(verdict)}; '
                         f'expected JSON like {example}.')
    row = await in_store(request.app, 'review', sample_id(sample), verdict)
    if row is None:
        raise Missing(f'the live net has no sample {clip(str(sample))} (GET /samples lists '
                      'them; a private net trains on all of its owner\'s drawings).')
    log.info('sample %d %s', sample, VERDICTS[verdict])
    return json(listed(row))


@bp.get('/samples/<sample:int>/image')
@documented(lambda ctx: user_data(ctx, {
    'summary': 'the 28x28 PNG the net sees (original=1: the image as submitted)',
    'parameters': [SAMPLE_ID, {'name': 'original', 'in': 'query', 'required': False,
                               'schema': {'type': 'string', 'enum': ['0', '1']}}, NET_QUERY],
    'responses': {'200': {'description': 'the image', 'content': {
        'image/png': {}, 'image/jpeg': {}, 'image/webp': {}, 'image/bmp': {}}},
        '400': error('original is not 0 or 1'), '404': error('no such sample'),
        '503': UNREACHABLE}}))
@holds_user_data
async def sample_image(request, sample):
    original = request.get_args(keep_blank_values=True).get('original', '0')
    if original not in ('0', '1'):
        raise BadRequest(f'original must be 0 or 1, got {shown(original)}.')
    net = await request.app.ctx.nets.get(net_name(request), wait=False)
    data = await in_store(request.app, 'image', sample_id(sample), original == '1', net.name)
    if data is None:
        raise Missing(f'there is no sample {clip(str(sample))} (GET /samples lists them).')
    if original == '1':  # what a user uploaded: never to be sniffed into HTML, never inline
        return raw(data, content_type=MEDIA[imaging.image_size(data)[0]],
                   headers={'X-Content-Type-Options': 'nosniff',
                            'Content-Disposition': f'attachment; filename="sample-{sample}"',
                            'Content-Security-Policy': "default-src 'none'; sandbox"})
    png = cv2.imencode('.png', np.frombuffer(data, np.uint8).reshape(28, 28))[1]
    return raw(png.tobytes(), content_type='image/png')


@bp.delete('/samples/<sample:int>')
@documented(lambda ctx: user_data(ctx, {
    'summary': 'delete a sample',
    'parameters': [SAMPLE_ID, NET_QUERY],
    'responses': {'204': {'description': 'deleted'}, '404': error('no such sample'),
                  '503': UNREACHABLE}}))
@holds_user_data
async def delete_sample(request, sample):
    net = await request.app.ctx.nets.get(net_name(request), wait=False)
    if not await in_store(request.app, 'delete', sample_id(sample), net.name):
        raise Missing(f'there is no sample {clip(str(sample))} (GET /samples lists them).')
    log.info('sample %d deleted', sample)
    return empty()


@bp.post('/samples/<sample:int>/share')
@documented(lambda ctx: {
    'summary': "share a private net's drawing with the live net, or stop",
    'parameters': [SAMPLE_ID],
    'requestBody': request_body({
        'type': 'object', 'required': ['share'], 'additionalProperties': False,
        'properties': {'net': NET, 'share': {'type': 'boolean'}}}),
    'responses': {'200': answer({'type': 'object'}), '400': error('bad body'),
                  '404': error('no such net, or no such sample of it'),
                  '415': NOT_JSON, '503': UNREACHABLE, **ctx.by_name},
    **ctx.security(ctx.guarded)})
@holds_user_data
async def share_sample(request, sample):
    """Share a private net's drawing with the live net ({"net": name, "share": true}), or
    stop sharing it ("share": false)."""
    example = '{"net": "<your net>", "share": true}'
    body = json_body(request, ('net', 'share'), example)
    if body is None or not isinstance(body.get('share'), bool):
        raise BadRequest(f'share must be true or false; expected JSON like {example}.')
    net = await request.app.ctx.nets.get(net_name(request), wait=False)
    if not await in_store(request.app, 'share', sample_id(sample), net.name, body['share']):
        raise Missing(f'there is no sample {clip(str(sample))} kept with this net (GET '
                      '/samples?net=<name> lists them).')
    return json({'id': sample, 'shared': body['share']})


def npz(ids, X, y):
    buffer = io.BytesIO()
    np.savez(buffer, X=X, y=y, ids=ids)
    return buffer.getvalue()


@bp.get('/samples/export')
@documented(lambda ctx: user_data(ctx, {
    'summary': 'every sample as an NPZ: X (n, 784) uint8, y (n,) uint8, ids (n,) '
               '(?suspect=0: without the drawings held back)',
    'parameters': [SUSPECT_QUERY, NET_QUERY],
    'responses': {'200': {'description': 'NPZ', 'content': {'application/octet-stream': {}}},
                  '400': error('bad suspect'), '404': NO_NET, '503': UNREACHABLE}}))
@holds_user_data
async def export(request):
    """Every sample as an NPZ: X (n, 784) uint8, y (n,) uint8 and ids (n,) int64; built off
    the event loop and written like the other large answers: a few at a time (read, built and
    written within the slot), in chunks."""
    ctx = request.app.ctx
    # The slot first: a request waiting for it holds nothing (100 unread exports each built
    # before waiting held 1.1 GB for 6,300 samples).
    held = held_query(request.get_args(keep_blank_values=True))
    net = await ctx.nets.get(net_name(request), wait=False)
    async with ctx.large_answers:
        ids, X, y = await in_store(request.app, 'arrays', net.name, held)
        body = await asyncio.get_running_loop().run_in_executor(ctx.decoders, npz, ids, X, y)
        await send_chunked(request, body, 'application/octet-stream',
                           {'Content-Disposition': 'attachment; filename="samples.npz"'})
