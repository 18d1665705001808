"""/v2: the Open Inference Protocol (KServe v2, Triton's HTTP/REST), beside our own routes, so
that any of its clients can ask our nets.

Models (a contract): ``live``, the live net (no versions), and ``mnist``, versions ``1`` ...
``K`` the shipped pretrained models (no version: the best). Each takes one input ``input``,
FP32 ``[n, 784]`` pixels in [0, 1] (row-major; flat or nested ``data``, or the binary data
extension), and gives two outputs: ``confidences``, FP32 ``[n, 10]``, the net's output
activations, as /predict's "confidence" (``Graph.predict_batch``), and ``unsure``, BYTES
``[n]``, /predict's "not sure" judgement of each row (why its answer should not be trusted,
e.g. a blank input; empty when it can be). At most ``MAX_ROWS`` rows a request in binary,
``JSON_ROWS`` as JSON numbers, within the body limit; large batches are read and computed off
the event loop.
Errors are the protocol's ``{"error": "..."}`` with 400 or 404 (503 when not ready).
"""
import asyncio

import numpy as np
import orjson
from sanic import Blueprint, json, raw

from .. import insight, observability
from ..declare import INT, answer, documented, error
from ..errors import BadRequest, Missing
from ..parsing import require_json, shown
from ..readiness import NotReady, failing, readiness

bp = Blueprint('inference')
INPUT, OUTPUT, DATATYPE = 'input', 'confidences', 'FP32'
UNSURE = 'unsure'  # BYTES [n]: why each row's answer should not be trusted, '' when it can
PIXELS, CLASSES = 784, 10
MAX_ROWS = 10_000
# Rows a request may send as JSON numbers. Parsing them (orjson.loads, then np.array) is one
# C call each, with the GIL held even off the event loop, for time in proportion to the
# numbers: bounded here so that every other request, /health too, waits at most a few
# milliseconds for it. Larger batches come as binary data, read without parsing.
JSON_ROWS = 256
# Lists and objects a request's JSON may hold: the request, its input and parameters, the
# shape, and the data flat or a list per row; and its commas, which bound its numbers (each
# but the last of a list is followed by one). Both counted (memchr-fast) before parsing: 16 MiB
# of "[]," would be 5.6 million lists, and of "0," 8 million numbers, each seconds of parsing
# with the GIL held.
MAX_CONTAINERS = JSON_ROWS + 64
MAX_COMMAS = JSON_ROWS * PIXELS + 64
BINARY_HINT = ('send larger batches as binary data: "parameters": {"binary_data_size": '
               f'4 x n x {PIXELS}}} on the input, its little-endian FP32 bytes after the JSON, '
               'and the JSON\'s length in Inference-Header-Content-Length.')
INLINE_BYTES = 64 * 1024  # bodies up to this size are read on the event loop
BINARY_HEADER = 'Inference-Header-Content-Length'
VERSION = '1.0.0'


def models(app):
    """{name: [versions]} served."""
    return {'live': [], 'mnist': [str(v) for v in sorted(app.ctx.pretrained)]}


async def find(app, name, version):
    """(label for the metrics, version answered, net) of a model and version; 404 otherwise."""
    ctx = app.ctx
    if name == 'live':
        if version is not None:
            raise Missing(f'the model live (the live net) has no versions; got {shown(version)}. '
                          'Ask /v2/models/live.')
        return 'live', '', (await ctx.nets.get()).graph
    if name == 'mnist':
        if version is None:
            if ctx.best is None:
                raise Missing('the model mnist has no versions: no pretrained models are '
                              'installed (`make models`).')
            version = str(ctx.best)
        # One spelling per version ("01" is "1"), and no int() of thousands of digits.
        if version.isdigit() and version.isascii() and len(version) < 10 and \
                int(version) in ctx.pretrained:
            return f'v{int(version)}', str(int(version)), ctx.pretrained[int(version)][1]
        raise Missing(f'the model mnist has no version {shown(version)}; its versions are '
                      f'{models(app)["mnist"]}.')
    raise Missing(f'there is no model {shown(name)}; the models are "live" and "mnist" '
                  '(versions at /v2/models/mnist).')


async def metadata(app, name, version=None):
    _, answered, net = await find(app, name, version)
    return {'name': name, 'versions': [answered] if version is not None else models(app)[name],
            'platform': 'better-tensorflow', 'sizes': list(net.sizes),
            'inputs': [{'name': INPUT, 'datatype': DATATYPE, 'shape': [-1, PIXELS]}],
            'outputs': [{'name': OUTPUT, 'datatype': DATATYPE, 'shape': [-1, CLASSES]},
                        {'name': UNSURE, 'datatype': 'BYTES', 'shape': [-1]}]}


# ---------------------------------------------------------------------------------------
# Inference: parse, check, compute (in a thread for large bodies).

def parse(body, header_length):
    """The request's JSON and the binary data after it (the binary data extension)."""
    if header_length is not None:
        if not (header_length.isascii() and header_length.isdigit() and len(header_length) < 10
                ) or int(header_length) > len(body):
            raise BadRequest(f'{BINARY_HEADER} must be the length of the JSON at the start of '
                             f'the body ({len(body)} bytes), got {shown(header_length)}.')
        body, binary = body[:int(header_length)], body[int(header_length):]
    else:
        binary = b''
    containers = body.count(b'[') + body.count(b'{')
    if containers > MAX_CONTAINERS:
        raise BadRequest(f'the JSON holds {containers} lists and objects, more than a request '
                         f'of {JSON_ROWS} rows needs ({MAX_CONTAINERS}); expected {{"inputs": '
                         f'[{{"name": "{INPUT}", "datatype": "{DATATYPE}", "shape": [n, {PIXELS}], '
                         f'"data": [...]}}]}}; {BINARY_HINT}')
    commas = body.count(b',')
    if commas > MAX_COMMAS:
        raise BadRequest(f'the JSON holds {commas} commas, more than {JSON_ROWS} rows of '
                         f'{PIXELS} numbers need ({MAX_COMMAS}): at most {JSON_ROWS} rows are '
                         f'read as JSON; {BINARY_HINT}')
    try:
        request = orjson.loads(body)
    except orjson.JSONDecodeError as e:
        raise BadRequest(f'the body is not JSON ({e}); expected {{"inputs": [{{"name": '
                         f'"{INPUT}", "datatype": "{DATATYPE}", "shape": [n, {PIXELS}], '
                         '"data": [...]}]}.') from None
    if not isinstance(request, dict) or not isinstance(request.get('inputs'), list):
        raise BadRequest('the body must be a JSON object with "inputs", a list of one '
                         f'tensor named "{INPUT}".')
    if not isinstance(request.get('id', ''), str):
        raise BadRequest(f'id must be a string, got {shown(request["id"])}.')
    parameters(request, 'the request')
    return request, binary


def parameters(item, where):
    """The "parameters" object of a request, input or output ({} when absent)."""
    found = item.get('parameters', {})
    if not isinstance(found, dict):
        raise BadRequest(f'parameters of {where} must be an object, got {shown(found)}.')
    return found


def tensor(request, binary):
    """The (n, 784) float32 input of a parsed request, checked."""
    inputs = request['inputs']
    if len(inputs) != 1 or not isinstance(inputs[0], dict):
        raise BadRequest(f'inputs must hold exactly one tensor, "{INPUT}"; got {len(inputs)}.')
    spec = inputs[0]
    if spec.get('name') != INPUT:
        raise BadRequest(f'the input must be named "{INPUT}", got {shown(spec.get("name"))}.')
    if spec.get('datatype') != DATATYPE:
        raise BadRequest(f'the input\'s datatype must be "{DATATYPE}", got '
                         f'{shown(spec.get("datatype"))}.')
    shape = spec.get('shape')
    if (not isinstance(shape, list) or len(shape) != 2 or
            not all(isinstance(d, int) and not isinstance(d, bool) for d in shape)
            or shape[1] != PIXELS or not 1 <= shape[0] <= MAX_ROWS):
        raise BadRequest(f'the input\'s shape must be [n, {PIXELS}] with n from 1 to '
                         f'{MAX_ROWS}, got {shown(shape)}.')
    n = shape[0]
    size = parameters(spec, 'the input').get('binary_data_size')
    if size is not None:
        if size.__class__ is not int or size != n * PIXELS * 4 or len(binary) != size:
            raise BadRequest(f'binary_data_size must be {n * PIXELS * 4} (n x {PIXELS} FP32) '
                             f'and match the {len(binary)} bytes after the JSON, got '
                             f'{shown(size)}.')
        X = np.frombuffer(binary, '<f4').reshape(n, PIXELS)
    else:
        data = spec.get('data')
        if n > JSON_ROWS:
            raise BadRequest(f'the input\'s shape has {n} rows; at most {JSON_ROWS} are read as '
                             f'JSON numbers: {BINARY_HINT}')
        if not isinstance(data, list):
            raise BadRequest(f'the input needs "data": {n} x {PIXELS} numbers, flat or as '
                             'nested lists (row-major).')
        try:
            X = np.array(data)
        except (ValueError, TypeError):
            X = None
        if X is None or X.dtype.kind not in 'iuf':  # strings, true/false, objects
            raise BadRequest('the input\'s data must hold only numbers, as one flat list or '
                             f'as {n} lists of {PIXELS}.')
        X = X.astype(np.float32)
        if X.shape not in ((n * PIXELS,), (n, PIXELS)):
            raise BadRequest(f'the input\'s data must hold {n} x {PIXELS} = {n * PIXELS} '
                             f'numbers (its shape), flat or nested; got shape {list(X.shape)}.')
        X = X.reshape(n, PIXELS)
    bad = ~(np.isfinite(X) & (X >= 0) & (X <= 1))
    if bad.any():
        rows, columns = np.nonzero(bad)
        examples = ', '.join(f'[{r}, {c}] = {X[r, c]}' for r, c in
                             zip(rows[:3].tolist(), columns[:3].tolist()))
        raise BadRequest(f'pixels must be finite numbers in [0, 1]: {len(rows)} are not, '
                         f'e.g. {examples}.')
    return X


def wanted_outputs(request):
    """[(output name, as binary data?)] asked for: every output when none is named."""
    binary = flag(parameters(request, 'the request'), 'binary_data_output', False)
    if 'outputs' not in request:  # all of them
        return [(OUTPUT, binary), (UNSURE, binary)]
    outputs = request['outputs']
    names = [o.get('name') for o in outputs] if isinstance(outputs, list) and all(
        isinstance(o, dict) for o in outputs) else None
    if not names or not all(isinstance(n, str) for n in names) or \
            not set(names) <= {OUTPUT, UNSURE} or len(set(names)) != len(names):
        raise BadRequest(f'outputs may ask for "{OUTPUT}" and "{UNSURE}", each once; got '
                         f'{shown(outputs)}.')
    return [(o['name'], flag(parameters(o, 'the output'), 'binary_data', binary))
            for o in outputs]


def flag(found, name, default):
    value = found.get(name, default)
    if not isinstance(value, bool):
        raise BadRequest(f'{name} must be true or false, got {shown(value)}.')
    return value


def infer(net, body, header_length, model):
    """(the answer's JSON as bytes, its binary tail or None, rows) of one request to
    ``model``, {"model_name": ..., "model_version": ...}."""
    request, binary = parse(body, header_length)
    X = tensor(request, binary)
    wanted = wanted_outputs(request)
    confidences = net.predict_batch(X)[1].astype('<f4', copy=False)  # (n, 10)
    answer, tails = {**model, 'outputs': []}, []
    if isinstance(request.get('id'), str):
        answer['id'] = request['id']
    for name, as_binary in wanted:
        if name == OUTPUT:
            output = {'name': OUTPUT, 'datatype': DATATYPE, 'shape': list(confidences.shape)}
            values, data = confidences.ravel(), confidences.tobytes()
        else:
            values = [why or '' for why in insight.unsure_rows(X, confidences)]
            output = {'name': UNSURE, 'datatype': 'BYTES', 'shape': [len(values)]}
            data = b''.join(len(v).to_bytes(4, 'little') + v for v in
                            (value.encode() for value in values)) if as_binary else None
        if as_binary:  # the binary data extension: the tensors' bytes after the JSON
            tails.append(data)
            output['parameters'] = {'binary_data_size': len(data)}
        else:
            output['data'] = values
        answer['outputs'].append(output)
    tail = b''.join(tails) if tails else None
    return orjson.dumps(answer, option=orjson.OPT_SERIALIZE_NUMPY), tail, len(X)


# ---------------------------------------------------------------------------------------
# Routes.

# The description of the routes (service/declare.py).
NOT_READY = error('not ready: the failing checks')
NO_MODEL = error('no such model or version')
TENSOR = {'type': 'object', 'required': ['name', 'datatype', 'shape'], 'properties': {
    'name': {'type': 'string'}, 'datatype': {'type': 'string', 'enum': ['FP32']},
    'shape': {'type': 'array', 'items': INT, 'minItems': 2, 'maxItems': 2},
    'parameters': {'type': 'object'},
    'data': {'type': 'array', 'description': 'row-major numbers, flat or nested', 'items': {}}}}
OUTPUT_NAME = {'type': 'string', 'enum': [OUTPUT, UNSURE]}
INFERENCE_REQUEST = {
    'type': 'object', 'required': ['inputs'], 'properties': {
        'id': {'type': 'string'}, 'parameters': {'type': 'object'},
        'inputs': {'type': 'array', 'minItems': 1, 'maxItems': 1, 'items': {
            **TENSOR, 'example': {'name': INPUT, 'datatype': DATATYPE, 'shape': [1, PIXELS],
                                  'data': [0.0] * PIXELS}}},
        'outputs': {'type': 'array', 'items': {'type': 'object', 'properties': {
            'name': OUTPUT_NAME, 'parameters': {'type': 'object'}}}}}}
INFERENCE_RESPONSE = {
    'type': 'object', 'properties': {
        'model_name': {'type': 'string'}, 'model_version': {'type': 'string'},
        'id': {'type': 'string'}, 'outputs': {'type': 'array', 'items': {
            **TENSOR, 'properties': {
                **TENSOR['properties'], 'name': OUTPUT_NAME,
                'datatype': {'type': 'string', 'enum': [DATATYPE, 'BYTES']},
                'shape': {'type': 'array', 'items': INT, 'minItems': 1, 'maxItems': 2}}}}}}
MODEL_METADATA = {
    'type': 'object', 'properties': {
        'name': {'type': 'string'}, 'platform': {'type': 'string'},
        'versions': {'type': 'array', 'items': {'type': 'string'}},
        'inputs': {'type': 'array', 'items': {'type': 'object'}},
        'outputs': {'type': 'array', 'items': {'type': 'object'}}}}


def model_parameters(ctx):
    """The path's parameters: the model's name, and its version where the path has one."""
    name = {'name': 'name', 'in': 'path', 'required': True,
            'schema': {'type': 'string', 'enum': ['live', 'mnist']}}
    version = {'name': 'version', 'in': 'path', 'required': True,
               'schema': {'type': 'string',
                          **({'enum': [str(v) for v in ctx.versions]} if ctx.versions else {})},
               'description': 'a version of mnist (live has none)'}
    return [name, version] if '{version}' in ctx.path else [name]


def about_a_model(unversioned, versioned, schema):
    """The GET of /v2/models/{name}[/versions/{version}]...: its summary by the path."""
    return lambda ctx: {
        'summary': versioned if '{version}' in ctx.path else unversioned,
        'parameters': model_parameters(ctx),
        'responses': {'200': answer(schema(ctx)), '404': NO_MODEL}}


@bp.get('/v2')
@documented(lambda ctx: {
    'summary': 'Open Inference Protocol: server metadata',
    'responses': {'200': answer({'type': 'object', 'properties': {
        'name': {'type': 'string'}, 'version': {'type': 'string'},
        'extensions': {'type': 'array', 'items': {'type': 'string'}}}})}})
async def server_metadata(request):
    return json({'name': 'better-tensorflow', 'version': VERSION, 'extensions': ['binary_data'],
                 'models': models(request.app)})


@bp.get('/v2/health/live')
@documented(lambda ctx: {'summary': 'Open Inference Protocol: liveness',
                         'responses': {'200': answer({'type': 'object'})}})
async def server_live(request):
    return json({'live': True})


@bp.get('/v2/health/ready')
@documented(lambda ctx: {'summary': 'Open Inference Protocol: readiness',
                         'responses': {'200': answer({'type': 'object'}), '503': NOT_READY}})
async def server_ready(request):
    bad = failing(readiness(request.app))
    if bad:
        raise NotReady('not ready: ' + '; '.join(f'{k}: {v}' for k, v in bad.items()),
                       context={'ready': False})
    return json({'ready': True})


@bp.get('/v2/models/<name>', name='model_metadata')
@bp.get('/v2/models/<name>/versions/<version>', name='model_version_metadata')
@documented(about_a_model('model metadata (no version: mnist is the best one)',
                          'model metadata of a version',
                          lambda ctx: ctx.schema('ModelMetadata', MODEL_METADATA)))
async def model_metadata(request, name, version=None):
    return json(await metadata(request.app, name, version))


@bp.get('/v2/models/<name>/ready', name='model_ready')
@bp.get('/v2/models/<name>/versions/<version>/ready', name='model_version_ready')
@documented(about_a_model('whether the model answers', 'whether the model version answers',
                          lambda ctx: {'type': 'object'}))
async def model_ready(request, name, version=None):
    _, answered, net = await find(request.app, name, version)
    return json({'name': name, 'version': answered, 'ready': net is not None})


@bp.post('/v2/models/<name>/infer', name='model_infer')
@bp.post('/v2/models/<name>/versions/<version>/infer', name='model_version_infer')
@documented(lambda ctx: {
    'summary': f'read n digits: {DATATYPE} [n, {PIXELS}] pixels in [0, 1] in, {DATATYPE} '
               f'[n, {CLASSES}] out',
    'parameters': model_parameters(ctx),
    'requestBody': {'required': True, 'content': {
        'application/json': {'schema': ctx.schema('InferenceRequest', INFERENCE_REQUEST)},
        'application/octet-stream': {'schema': {
            'type': 'string', 'format': 'binary', 'description': 'the binary data '
            f'extension: JSON of {BINARY_HEADER} bytes, then the little-endian FP32 data'}}}},
    'responses': {'200': answer(ctx.schema('InferenceResponse', INFERENCE_RESPONSE)),
                  '400': error('bad JSON, input name, datatype, shape, outputs, or values '
                               'that are not finite in [0, 1]'),
                  '404': NO_MODEL,
                  '413': error(f'body over {ctx.settings.max_body} bytes')}})
async def model_infer(request, name, version=None):
    app = request.app
    label, answered, net = await find(app, name, version)
    body, header = request.body, request.headers.get(BINARY_HEADER)
    # The protocol's clients (tritonclient) send no Content-Type; binary data may follow.
    require_json(request, also=(None, 'application/octet-stream'))
    model = {'model_name': name, 'model_version': answered}
    if len(body) <= INLINE_BYTES:
        head, tail, rows = infer(net, body, header, model)
    else:
        head, tail, rows = await asyncio.get_running_loop().run_in_executor(
            app.ctx.decoders, infer, net, body, header, model)
    observability.predicted(app, label, rows)
    if tail is None:
        return raw(head, content_type='application/json')
    return raw(head + tail, content_type='application/octet-stream',
               headers={BINARY_HEADER: str(len(head))})
