"""/nets: a net of one's own. POST /nets makes a private net (a copy of the live net, of a
shipped model, or a fresh one) and answers with its name, 128 random bits: the name is the
capability, never listed publicly; every route that reads or changes a net takes it ("net").
GET /nets is the operator's list (guarded); /nets/{name} describes or deletes one;
/nets/{name}/versions lists its versions (with each training's gate) and
/nets/{name}/rollback brings one back (a new version holding the old one's weights);
/nets/{name}/promote does the same for a candidate the gate held back."""
import asyncio
import collections
import datetime
import logging
import time

from sanic import Blueprint, empty, json

from .. import asking
from ..changes import acquire, outlive_request, replace
from ..declare import (
    BUSY,
    INT,
    NET,
    NO_NET,
    NOT_JSON,
    SIZES,
    answer,
    documented,
    error,
    request_body,
)
from ..errors import (
    BadRequest,
    Conflict,
    InsufficientStorage,
    Missing,
    SanicException,
    TooMany,
    UnsupportedMediaType,
    store_call,
)
from ..exporting import read_npz
from ..guard import changes_a_net, changes_state, creates_a_net, imports_a_net
from ..nets import describe, fresh_net, is_int
from ..parsing import json_body, shown
from ..playground import NET_OPTIONS, check_sizes
from ..playground import fresh_net as chosen_net
from ..samples import in_store
from ..store import LIVE, StoreError, new_net_name, now_iso
from ..training import current_status, in_queue

log = logging.getLogger(__name__)
bp = Blueprint('nets')
CREATE = ('{"from": "live"}  ("live", "fresh", or a shipped model\'s version; a fresh one '
          'may have "sizes": [784, ..., 10] and "options": {...})')
HOUR = 3600.0


async def in_thread(app, work, *args):
    """A store call off the event loop; its errors as 507 / 503."""
    return await store_call(work, *args)


def rate_limit(app, address):
    """At most --nets-per-hour new nets per client address and worker (429 past it)."""
    ctx, limit = app.ctx, app.ctx.settings.nets_per_hour
    now = time.monotonic()
    made = ctx.created.setdefault(address, collections.deque())
    while made and now - made[0] > HOUR:
        made.popleft()
    if len(made) >= limit:
        wait = HOUR - (now - made[0])
        raise TooMany(f'this address made {len(made)} nets in the last hour, the most it may '
                      f'(--nets-per-hour {limit}); try again in {wait / 60:.0f} minutes, or '
                      'use a net made before.', retry_after=wait)
    made.append(now)
    if len(ctx.created) > 10_000:  # addresses seen: bounded, the idle ones first out
        for old in [a for a, times in ctx.created.items() if not times][:5_000]:
            del ctx.created[old]


NET_ANSWER = {'type': 'object', 'properties': {
    'net': {'type': 'string'}, 'sizes': SIZES, 'version': INT, 'epochs': INT,
    'from': {'type': 'string', 'nullable': True},
    'created': {'type': 'string', 'nullable': True},
    'learning_rate': {'type': 'number'}, 'batch_size': INT, 'options': {'type': 'object'}}}
NAME = {'name': 'name', 'in': 'path', 'required': True, 'schema': NET}
UNREACHABLE = error('the store is unreachable')


OPTIONS_SCHEMA = {'type': 'object', 'description': 'the library\'s options (docs/api.md, '
                  '"A net of one\'s own shape"): ' + ', '.join(NET_OPTIONS)}


@bp.post('/nets')
@documented(lambda ctx: {
    'summary': 'a private net of your own: a copy of the live net, of a shipped model, or a '
               'fresh one of the shape and options you choose; its name (128 random bits) is '
               'its key',
    'requestBody': request_body({'type': 'object', 'additionalProperties': False, 'properties': {
        'from': {'oneOf': [{'type': 'string', 'enum': ['live', 'fresh']},
                           {'type': 'integer', 'enum': ctx.versions or [1]}],
                 'default': 'live'},
        'sizes': {**SIZES, 'description': f'from "fresh": [784, hidden..., 10], at most '
                  f'{ctx.settings.max_hidden_layers} hidden layers of at most '
                  f'{ctx.settings.max_units} units', 'minItems': 2,
                  'maxItems': ctx.settings.max_hidden_layers + 2},
        'options': OPTIONS_SCHEMA}}, required=False),
    'responses': {'201': answer(NET_ANSWER, 'made'),
                  '400': error('bad "from", "sizes" or "options" (the message names the field '
                               'or the limit)'),
                  '415': NOT_JSON,
                  '429': error('this address made --nets-per-hour nets already'),
                  '503': UNREACHABLE,
                  '507': error('--max-nets nets, or the disk is full'),
                  '403': error('a cross-site request')}})
@creates_a_net
async def create(request):
    ctx = request.app.ctx
    body = json_body(request, ('from', 'sizes', 'options'), CREATE) or {}
    source = body.get('from', LIVE)
    if source != 'fresh' and ('sizes' in body or 'options' in body):
        raise BadRequest(f'"sizes" and "options" choose a fresh net: send them with '
                         f'"from": "fresh" (a copy keeps its own); got "from": {shown(source)}.')
    if source == LIVE:
        graph = (await ctx.nets.get()).graph.copy()
    elif source == 'fresh' and ('sizes' in body or 'options' in body):
        graph = chosen_net(body.get('sizes', list(ctx.settings.default_sizes)),
                           body.get('options', {}), ctx.settings)
    elif source == 'fresh':
        graph = fresh_net(ctx.settings)
    elif is_int(source) and source in ctx.pretrained:
        graph = ctx.pretrained[source][1].copy()
    else:
        raise BadRequest(f'from must be "live" (a copy of the shared net), "fresh" (a new '
                         f'untrained net) or a shipped model\'s version '
                         f'{sorted(ctx.pretrained)}; got {shown(source)}.')
    origin = source if isinstance(source, str) else f'v{source}'
    return await add_net(request, graph, origin)


async def add_net(request, graph, origin):
    """Store ``graph`` as a new private net (within --max-nets and --nets-per-hour): 201 with
    its name."""
    app, ctx = request.app, request.app.ctx
    existing = await in_thread(app, ctx.store.count_nets)
    if existing >= ctx.settings.max_nets:
        raise InsufficientStorage(f'this server holds {existing} nets, the most it keeps '
                                  '(--max-nets); delete one (DELETE /nets/{name}) or try later.')
    rate_limit(app, request.ip or 'unknown')
    name = new_net_name()
    meta = {'validation_accuracy': None}
    await in_thread(app, ctx.store.create_net, name, graph, meta, {'from': origin})
    log.info('net %s made from %s: %s', name[:6] + '...', origin, graph)
    return json({'net': name, 'sizes': list(graph.sizes), 'version': 1, 'from': origin,
                 'epochs': graph.epochs, 'options': graph.options,
                 'learning_rate': graph.learning_rate, 'batch_size': graph.batch_size,
                 'created': now_iso()}, status=201)


@bp.post('/nets/import')
@documented(lambda ctx: {
    'summary': 'a private net from an NPZ file (as GET /nets/{name}/export?format=npz gives '
               'it): the body is the file itself',
    'requestBody': {'required': True, 'content': {'application/octet-stream': {
        'schema': {'type': 'string', 'format': 'binary',
                   'maxLength': min(ctx.settings.max_import_bytes, ctx.settings.max_body)}}}},
    'responses': {'201': answer(NET_ANSWER, 'made'),
                  '400': error('not a model file this server takes (the message says why)'),
                  '413': error('larger than --max-import-bytes'),
                  '415': error('a body that is not application/octet-stream'),
                  '429': error('this address made --nets-per-hour nets already'),
                  '503': UNREACHABLE,
                  '507': error('--max-nets nets, or the disk is full'),
                  '403': error('a cross-site request')}})
@imports_a_net
async def import_net(request):
    """The file goes through Graph.from_file's checks (no pickle; every member's declared
    shape checked against the sizes, and their total against the file's size, before any
    array is read), then the server's: 784 inputs, 10 outputs, its layer and unit limits."""
    ctx, settings = request.app.ctx, request.app.ctx.settings
    given = request.headers.get('content-type')
    if given is None or given.split(';')[0].strip().lower() != 'application/octet-stream':
        raise UnsupportedMediaType(
            'POST /nets/import takes the NPZ file itself as the body, sent as Content-Type: '
            'application/octet-stream; got '
            f'{"no Content-Type" if given is None else "Content-Type " + shown(given)}.')
    limit = min(settings.max_import_bytes, settings.max_body)
    if not request.body:
        raise BadRequest('the body is empty: send a net\'s NPZ file (GET '
                         '/nets/{name}/export?format=npz gives one).')
    if len(request.body) > limit:
        raise SanicException(f'the file has {len(request.body)} bytes, more than this server '
                             f'takes (--max-import-bytes {limit}).', 413, quiet=True)
    graph = await asyncio.get_running_loop().run_in_executor(
        ctx.decoders, read_npz, request.body, settings)
    try:
        check_sizes(list(graph.sizes), settings)
    except BadRequest as e:
        raise BadRequest(f'the file holds a {"-".join(map(str, graph.sizes))} net: {e}') from None
    return await add_net(request, graph, 'import')


@bp.get('/nets')
@documented(lambda ctx: {
    'summary': "the operator's list of private nets", **ctx.security(ctx.guarded),
    'responses': {'200': answer({'type': 'object', 'properties': {
        'total': INT, 'nets': {'type': 'array', 'items': NET_ANSWER}}}),
        '503': UNREACHABLE, **ctx.by_name}})
@changes_state
async def list_nets(request):
    """The operator's view: every private net, with its size and last use."""
    ctx = request.app.ctx
    nets = await in_thread(request.app, ctx.store.list_nets)
    for found in nets:
        found['loaded'] = found['net'] in ctx.nets.nets
    return json({'total': len(nets), 'nets': nets,
                 'limits': {'max_nets': ctx.settings.max_nets,
                            'net_idle_days': ctx.settings.net_idle_days}})


@bp.get('/nets/<name>')
@documented(lambda ctx: {
    'summary': 'what a net is: sizes, version, epochs, drawings, training',
    'parameters': [NAME],
    'responses': {'200': answer(NET_ANSWER), '404': NO_NET, '503': UNREACHABLE}})
async def describe_net(request, name):
    ctx = request.app.ctx
    net = await ctx.nets.get(name)
    about = {} if name == LIVE else (await in_thread(request.app, ctx.store.about, name) or {})
    drawings = None
    if ctx.samples is not None:
        try:
            drawings = (await asyncio.get_running_loop().run_in_executor(
                ctx.db, lambda: ctx.samples.list(None, 0, 1, name)))[0]
        except StoreError:
            pass
    return json({'net': net.label, **describe(net.graph, net.meta),
                 'created': about.get('created'), 'last_used': about.get('last_used'),
                 'from': about.get('from'), 'drawings': drawings,
                 'training': (await current_status(request.app, net))['state']})


@bp.delete('/nets/<name>')
@documented(lambda ctx: {
    'summary': 'delete a private net, its versions and drawings',
    'parameters': [NAME], **ctx.security(ctx.guarded),
    'responses': {'204': {'description': 'deleted'}, '404': NO_NET,
                  '409': error('it trains, or it is the live net'),
                  '503': UNREACHABLE, **ctx.by_name}})
@changes_a_net
async def delete_net(request, name):
    """Its versions and drawings go with it; 409 while it trains or waits to."""
    app, ctx = request.app, request.app.ctx
    if name == LIVE:
        raise Conflict('the live net is the shared one: it cannot be deleted (/reset gives it '
                       'a fresh version; /nets/live/rollback brings an old one back).')
    net = await ctx.nets.get(name, wait=False)
    lock = await acquire(app, net, 'delete this net')

    async def delete():
        try:
            queued = await in_queue(app, 'active', name)
            if queued is not None:
                raise Conflict(f'cannot delete this net while its training is {queued["state"]}'
                               ' (see /train/status).')
            await in_thread(app, ctx.store.delete_net, name)
        finally:
            ctx.store.release_lock(lock)
        ctx.nets.forget(name)
        if ctx.samples is not None:
            await asyncio.get_running_loop().run_in_executor(ctx.db, ctx.samples.delete_net,
                                                             name)
    await outlive_request(app, delete())
    log.info('net %s deleted', name[:6] + '...')
    return empty()


@bp.get('/nets/<name>/versions')
@documented(lambda ctx: {
    'summary': "a net's kept versions, oldest first, and the current one",
    'parameters': [NAME],
    'responses': {'200': answer({'type': 'object', 'properties': {
        'versions': {'type': 'array', 'items': {'type': 'object'}},
        'current': {'type': 'integer', 'nullable': True}}}),
        '404': NO_NET, '503': UNREACHABLE}})
async def versions(request, name):
    ctx = request.app.ctx
    net = await ctx.nets.get(name, wait=False)
    kept, current = await in_thread(request.app, ctx.store.versions, net.name)
    return json({'net': net.label, 'versions': kept, 'current': current,
                 'kept': ctx.settings.max_versions})


def bring_back_operation(summary, cause):
    """The OpenAPI of rollback and promote: the same guard, body and answers."""
    return lambda ctx: {
        'summary': summary, 'parameters': [NAME], **ctx.security(ctx.guarded),
        'requestBody': request_body({
            'type': 'object', 'required': ['version'], 'additionalProperties': False,
            'properties': {'version': {'type': 'integer', 'minimum': 1}}}),
        'responses': {'200': answer(NET_ANSWER), '400': error('bad version'),
                      '404': error('no such net, or the version was pruned'),
                      '409': BUSY if cause == 'rollback' else
                      error('a training job is running, or the version is not a candidate'),
                      '415': NOT_JSON, '503': UNREACHABLE,
                      '507': error('the disk is full'), **ctx.by_name}}


async def bring_back(request, name, cause):
    """A kept version ({"version": k}) made the net's current one, as a new version whose
    cause is ``cause`` ("rollback", "promote": only a candidate the gate held back); 404 for
    a version pruned or never made."""
    app, ctx = request.app, request.app.ctx
    example = '{"version": 3}'
    body = json_body(request, ('version',), example)
    version = None if body is None else body.get('version')
    if not is_int(version) or version < 1:
        raise BadRequest(f'version must be the number of a kept version (GET '
                         f'/nets/{{name}}/versions lists them), like {example}; got '
                         f'{"nothing" if version is None else shown(version)}.')
    net = await ctx.nets.get(name, wait=False)
    found = await in_thread(app, ctx.store.load_version, net.name, version)
    if found is None:
        kept, _ = await in_thread(app, ctx.store.versions, net.name)
        raise Missing(f'this net has no version {version}: it keeps '
                      f'{[v["version"] for v in kept]} (the oldest are pruned past '
                      f'{ctx.settings.max_versions}).')
    graph, meta = found
    if cause == 'promote':
        if meta.get('promoted') is not False:
            raise Conflict(f'version {version} is not a candidate held back by the gate (only '
                           'a training that failed it is); POST /nets/{name}/rollback brings '
                           'any kept version back.')
        record, key = {'validation_accuracy': meta.get('validation_accuracy'),
                       'promoted_from': version, 'promoted': True,
                       'gate': meta.get('gate')}, 'promoted_from'
    else:
        record, key = {'validation_accuracy': meta.get('validation_accuracy'),
                       'rolled_back_to': version}, 'rolled_back_to'
    new = await replace(app, net, 'roll back' if cause == 'rollback' else 'promote',
                        lambda: graph, cause, record)
    log.info('%s: version %d made current by a %s (now version %d)', net.title, version,
             cause, new)
    return json({'net': net.label, 'version': new, key: version,
                 **describe(net.graph, net.meta)})


@bp.post('/nets/<name>/rollback')
@documented(bring_back_operation('the net answers as version k did (a new version, cause '
                                 '"rollback")', 'rollback'))
@changes_a_net
async def rollback(request, name):
    """{"version": k}: the net answers exactly as version k did, as a new version whose
    cause is "rollback"; 404 for a version pruned or never made."""
    return await bring_back(request, name, 'rollback')


@bp.post('/nets/<name>/promote')
@documented(bring_back_operation('make a candidate the gate held back live on purpose (a new '
                                 'version, cause "promote")', 'promote'))
@changes_a_net
async def promote(request, name):
    """{"version": k}: the candidate version k (a training that failed the gate) becomes
    the net's current one, as a new version whose cause is "promote"; 409 for a version
    that is not a candidate."""
    return await bring_back(request, name, 'promote')


async def expire_idle(app):
    """Delete the private nets unused for --net-idle-days (never one that trains)."""
    ctx = app.ctx
    nets = await asyncio.get_running_loop().run_in_executor(None, ctx.store.list_nets)
    limit = datetime.timedelta(days=ctx.settings.net_idle_days)
    now = datetime.datetime.now(datetime.UTC)
    for found in nets:
        try:
            idle = now - datetime.datetime.fromisoformat(found['last_used'])
        except (KeyError, TypeError, ValueError):
            continue
        if idle <= limit or found['net'] in ctx.nets.nets and \
                ctx.nets.nets[found['net']].job.running:
            continue
        lock = await asyncio.get_running_loop().run_in_executor(None, ctx.store.try_lock,
                                                                found['net'])
        if lock is None:
            continue
        try:
            await asyncio.get_running_loop().run_in_executor(None, ctx.store.delete_net,
                                                             found['net'])
        finally:
            ctx.store.release_lock(lock)
        ctx.nets.forget(found['net'])
        if ctx.samples is not None:
            await asyncio.get_running_loop().run_in_executor(ctx.db, ctx.samples.delete_net,
                                                             found['net'])
        log.info('net %s deleted after %d idle days', found['net'][:6] + '...', idle.days)


PER_DIGIT = {'type': 'object', 'properties': {
    'drawings': INT, 'right': INT, 'least_margin': {'type': 'number', 'nullable': True}}}
MAX_ASKED = 5000  # the newest drawings a GET /nets/{name}/ask reads (bounds its cost)


@bp.get('/nets/<name>/ask')
@documented(lambda ctx: {
    'summary': 'which digits to draw next for this net: first 5 of each, then more of those '
               'it reads worst or is least sure of; per digit, its drawings and how many it '
               'reads right now',
    'parameters': [NAME],
    'responses': {'200': answer({'type': 'object', 'properties': {
        'net': {'type': 'string'}, 'ask': {'type': 'array', 'items': INT},
        'per_digit': {'type': 'object', 'additionalProperties': PER_DIGIT},
        'each': INT, 'round': {'type': 'string', 'enum': ['first', 'more']}}}),
        '404': NO_NET, '503': UNREACHABLE, '507': error('the disk is full')}})
async def ask(request, name):
    """The net's own drawings (the live net's: its own and the shared ones; the newest
    MAX_ASKED) read by the net now, off the event loop."""
    app, ctx = request.app, request.app.ctx
    net = await ctx.nets.get(name)
    _, X, y = await in_store(app, 'arrays', net.name, None, MAX_ASKED)  # read bounded too
    graph = net.graph
    found = await asyncio.get_running_loop().run_in_executor(None, asking.ask, graph, X, y)
    return json({'net': net.label, **found})
