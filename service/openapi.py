"""The OpenAPI 3 document of the service, written by hand (tests/test_server.py keeps it true:
its paths and methods must be exactly the app's routes). Every figure in it (the default net,
the epoch limit, the score's sample count, the body limit) comes from the server's settings."""
from .insight import FULL_LAYER, MAX_EXAMPLES, TOP_UNITS


def _json(schema, description='OK'):
    return {'description': description, 'content': {'application/json': {'schema': schema}}}


def _ref(name):
    return {'$ref': f'#/components/schemas/{name}'}


def _error(description):
    return _json(_ref('Error'), description)


def _security(guarded):
    return {'security': guarded['security']} if 'security' in guarded else {}


_NUMBER = {'type': 'number'}
_INT = {'type': 'integer'}
_SIZES = {'type': 'array', 'items': _INT}
_OK_TEXT = {'description': 'done', 'content': {'text/plain': {'schema': {'type': 'string',
                                                                          'enum': ['OK']}}}}
_BUSY = _error('a training job is running (the body also has "status", as /train/status)')
_SECURITY_SCHEMES = {
    'bearer': {'type': 'http', 'scheme': 'bearer',
               'description': "the server's BTF_TOKEN (required only when it has one)"},
    'token': {'type': 'apiKey', 'in': 'query', 'name': 'token',
              'description': "the same token in the address, for a browser's GET"}}
# A 12x12 PNG of a vertical stroke (a "1"), so that the example request is a real one.
_EXAMPLE_PNG = ('data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAwAAAAMCAAAAABzHgM7AAAAHElEQVQI'
                '12NgAIP/YJIRxgYxmBiQAL04DMjOAQAqGAMSsSjLHgAAAABJRU5ErkJggg==')



def _insight_paths(pretrained):
    """/confusion, /confusion/examples and /compare (service/routes/insight.py)."""
    model = {'name': 'pretrained', 'in': 'query', 'required': False, 'schema': pretrained}
    no_data = _error('no test images: neither the shipped models/mnist-test.npz (`make '
                     'models`) nor training data (`make data`)')
    digit = {'type': 'integer', 'minimum': 0, 'maximum': 9}
    images = {'type': 'object', 'description': 'exactly which images: how many, from where',
              'properties': {'count': _INT, 'source': {'type': 'string'},
                             'file': {'type': 'string'}}}
    return {
        '/confusion': {'get': {
            'summary': "the net's 10x10 confusion matrix on the held-out MNIST test images "
                       '(computed once per net)',
            'parameters': [model],
            'responses': {'200': _json({'type': 'object', 'properties': {
                'model': {'type': 'string'}, 'images': images, 'accuracy': _NUMBER,
                'matrix': {'type': 'array', 'description': 'row: true digit, column: digit '
                           'read; counts', 'items': {'type': 'array', 'items': _INT}},
                'per_class': {'type': 'array', 'items': {'type': 'number',
                                                         'nullable': True}}}}),
                '400': _error('pretrained not listed'), '503': no_data}}},
        '/confusion/examples': {'get': {
            'summary': "one cell's images as 28x28 PNG data URLs, the most confidently read "
                       'first, with the confidence of the digit read',
            'parameters': [model,
                           {'name': 'true', 'in': 'query', 'required': True, 'schema': digit},
                           {'name': 'read', 'in': 'query', 'required': True, 'schema': digit},
                           {'name': 'limit', 'in': 'query', 'required': False, 'schema': {
                               'type': 'integer', 'minimum': 1, 'maximum': MAX_EXAMPLES,
                               'default': 24}}],
            'responses': {'200': _json({'type': 'object', 'properties': {
                'model': {'type': 'string'}, 'true': _INT, 'read': _INT,
                'count': {'type': 'integer', 'description': 'images in the cell'},
                'images': images,
                'examples': {'type': 'array', 'maxItems': MAX_EXAMPLES, 'items': {
                    'type': 'object', 'properties': {
                        'index': {'type': 'integer', 'description': 'row in the test split'},
                        'confidence': _NUMBER,
                        'image': {'type': 'string', 'format': 'uri'}}}}}}),
                '400': _error('pretrained, true, read or limit is bad'), '503': no_data}}},
        '/compare': {'post': {
            'summary': 'the drawing (decoded once) read by the live net and every shipped model',
            'requestBody': {'required': True, 'content': {'application/json': {'schema': {
                'type': 'object', 'required': ['image'], 'additionalProperties': False,
                'properties': {'image': {'type': 'string', 'example': _EXAMPLE_PNG}}}}}},
            'responses': {'200': _json({'type': 'object', 'properties': {
                'agree': {'type': 'boolean', 'description': 'every net read the same digit'},
                'models': {'type': 'array', 'items': {'type': 'object', 'properties': {
                    'model': {'type': 'string'}, 'label': _INT, 'confidence': _NUMBER,
                    'unsure': _UNSURE}}}}}),
                '400': _error('bad body or image'),
                '413': _error('body over the size limit, or image over 4096x4096 pixels'),
                '415': _error('a body that is not application/json'),
                '422': _error('no digit found (blank image)')}}},
    }


_UNSURE = {'type': 'string', 'nullable': True,
           'description': 'why the answer should not be trusted (docs/api.md, "Not sure"), '
                          'or null'}
_ACTIVATIONS = {
    'type': 'array', 'description': 'with return_activations: per hidden layer its size, its '
    f'{TOP_UNITS} most active units and, for a layer of at most {FULL_LAYER} units, every '
    'value',
    'items': {'type': 'object', 'properties': {
        'layer': _INT, 'size': _INT, 'activation': {'type': 'string'},
        'top': {'type': 'array', 'maxItems': TOP_UNITS, 'items': {
            'type': 'object', 'properties': {'unit': _INT, 'value': _NUMBER}}},
        'values': {'type': 'array', 'maxItems': FULL_LAYER, 'items': _NUMBER}}}}


def openapi_document(settings, versions):
    """The document for a server with these ``settings`` and pretrained ``versions``."""
    max_epochs, max_body = settings.max_epochs, settings.max_body
    sizes = '-'.join(map(str, settings.default_sizes))
    # With a token, the routes that change the live net take it either way; without one,
    # they refuse cross-site requests.
    guarded = {'security': [{'bearer': []}, {'token': []}],
               'responses': {'401': _error('no token, or a wrong one')}} \
        if settings.token is not None else \
        {'responses': {'403': _error('a cross-site request (docs/operations.md, access)')}}
    changing = {'415': _error('a POST body that is not application/json'),
                '503': _error('the new net could not be saved (storage unreachable)'),
                '507': _error('the disk is full: the new net could not be saved')}
    epochs = {'type': 'integer', 'minimum': 1, 'maximum': max_epochs, 'default': 1}
    pretrained = {'type': 'integer', 'enum': [0, *versions],
                  'description': 'a version listed by /models; absent or 0 means the live net'}
    train = {
        'summary': 'train the live net (a copy, swapped in when complete)',
        'responses': {
            '200': _json(_ref('TrainResult'), 'after training'),
            '400': _error(f'epochs is not an integer from 1 to {max_epochs}'),
            '409': _BUSY,
            **changing,
            '503': _error('no training data (`make data`), or the net could not be saved'),
            **guarded.get('responses', {}),
        },
        **_security(guarded),
    }
    # The /samples routes hold users' drawings: the same guard.
    samples_guard = {**guarded, 'responses': {
        **guarded.get('responses', {}), '403': _error('a cross-site request')}} \
        if settings.token is None else guarded
    sample_id = {'name': 'sample', 'in': 'path', 'required': True,
                 'schema': {'type': 'integer', 'minimum': 1}}
    busy_or_ok = {'200': _OK_TEXT, '409': _BUSY, **changing, **guarded.get('responses', {})}
    return _with_nets(settings, versions, _with_operations(settings, versions, {
        'openapi': '3.0.3',
        'info': {'title': 'better-tensorflow', 'version': '1.0.0',
                 'description': 'An MNIST digit classifier to ask, train and inspect. Every '
                                'answer has CORS headers; every error is a 4xx JSON '
                                f'{{"error": "..."}}; bodies over {max_body} bytes get 413.'},
        'paths': {
            '/': {'get': {'summary': 'the drawing page', 'responses': {
                '200': {'description': 'HTML', 'content': {'text/html': {}}}}}},
            '/static/{path}': {'get': {
                'summary': "the drawing page's files",
                'parameters': [{'name': 'path', 'in': 'path', 'required': True,
                                'schema': {'type': 'string'}}],
                'responses': {'200': {'description': 'the file'},
                              '404': _error('no such file')}}},
            '/health': {'get': {'summary': 'liveness', 'responses': {'200': _json(
                {'type': 'object', 'required': ['status'],
                 'properties': {'status': {'type': 'string', 'enum': ['ok']}}})}}},
            '/openapi.json': {'get': {'summary': 'this document',
                                      'responses': {'200': _json({'type': 'object'})}}},
            '/predict': {'post': {
                'summary': 'classify a drawn digit',
                'requestBody': {'required': True, 'content': {
                    'application/json': {'schema': _ref('PredictRequest')}}},
                'responses': {
                    '200': _json(_ref('Prediction')),
                    '400': _error('bad body, image, pretrained or return_input'),
                    '413': _error('body over the size limit, or image over 4096x4096 pixels'),
                    '422': _error('no digit found (blank image)'),
                }}},
            '/train': {
                'get': {**train, 'parameters': [
                    {'name': 'epochs', 'in': 'query', 'required': False, 'schema': epochs},
                    {'name': 'samples', 'in': 'query', 'required': False,
                     'schema': {'type': 'string', 'enum': ['0', '1', 'true', 'false']},
                     'description': 'also train on the stored samples'}]},
                'post': {**train, 'requestBody': {'required': False, 'content': {
                    'application/json': {'schema': {
                        'type': 'object', 'additionalProperties': False,
                        'properties': {'epochs': epochs, 'samples': {
                            'type': 'boolean', 'default': False,
                            'description': 'also train on the stored samples, '
                                           f'{settings.sample_share:.0%} of every epoch'}}}}}}},
            },
            '/train/status': {'get': {'summary': 'progress of the current or last job',
                                      'responses': {'200': _json(_ref('TrainStatus'))}}},
            '/train/events': {'get': {
                'summary': 'Server-Sent Events: "status" first, then per job "progress" '
                           '(~every 100 ms), "epoch" (loss, val_accuracy) and "done"',
                'responses': {'200': {'description': 'an event stream that stays open',
                                      'content': {'text/event-stream': {}}},
                              '503': _error('too many event streams are open')}}},
            '/reset': {m: {'summary': f'live net := untrained {sizes}, learning rate '
                                      f'{settings.default_learning_rate}',
                           'responses': busy_or_ok, **_security(guarded)}
                       for m in ('get', 'post')},
            '/pretrain': {m: {'summary': 'live net := a copy of the best pretrained model',
                              'responses': {**busy_or_ok, '503': _error(
                                  'no pretrained models installed')}, **_security(guarded)}
                          for m in ('get', 'post')},
            '/samples': {
                'post': {
                    'summary': 'store a drawing with its label (the live net reads it too)',
                    'requestBody': {'required': True, 'content': {'application/json': {
                        'schema': {'type': 'object', 'required': ['image', 'label'],
                                   'additionalProperties': False, 'properties': {
                                       'image': {'type': 'string', 'example': _EXAMPLE_PNG},
                                       'label': {'type': 'integer', 'minimum': 0,
                                                 'maximum': 9},
                                       'pretrained': {**pretrained, 'nullable': True,
                                                      'enum': [None, *pretrained['enum']]}}}}}},
                    'responses': {'201': _json(_ref('Sample'), 'stored'),
                                  '200': _json(_ref('Sample'), 'the same image was stored '
                                                               'before: its sample'),
                                  '400': _error('bad body, image or label'),
                                  '413': _error('image over the size limits'),
                                  '415': _error('a body that is not application/json'),
                                  '422': _error('no digit found (blank image)'),
                                  '503': _error('the sample store is unreachable'),
                                  '507': _error(f'the store holds {settings.max_samples} '
                                                'samples, or the disk is full'),
                                  **samples_guard.get('responses', {})},
                    **_security(samples_guard)},
                'get': {
                    'summary': 'the stored samples, newest first',
                    'parameters': [
                        {'name': 'label', 'in': 'query', 'required': False,
                         'schema': {'type': 'integer', 'minimum': 0, 'maximum': 9}},
                        {'name': 'offset', 'in': 'query', 'required': False,
                         'schema': {'type': 'integer', 'minimum': 0, 'default': 0}},
                        {'name': 'limit', 'in': 'query', 'required': False,
                         'schema': {'type': 'integer', 'minimum': 1, 'maximum': 500,
                                    'default': 50}}],
                    'responses': {'200': _json({'type': 'object', 'properties': {
                        'total': _INT, 'samples': {'type': 'array', 'items': _ref('Sample')}}}),
                        '400': _error('bad label, offset or limit'),
                        '503': _error('the sample store is unreachable'),
                        **samples_guard.get('responses', {})},
                    **_security(samples_guard)}},
            '/samples/export': {'get': {
                'summary': 'every sample as an NPZ: X (n, 784) uint8, y (n,) uint8, ids (n,)',
                'responses': {'200': {'description': 'NPZ', 'content': {
                    'application/octet-stream': {}}},
                    '503': _error('the sample store is unreachable'),
                    **samples_guard.get('responses', {})},
                **_security(samples_guard)}},
            '/samples/{sample}/image': {'get': {
                'summary': 'the 28x28 PNG the net sees (original=1: the image as submitted)',
                'parameters': [sample_id, {'name': 'original', 'in': 'query',
                                           'required': False, 'schema': {
                                               'type': 'string', 'enum': ['0', '1']}}],
                'responses': {'200': {'description': 'the image', 'content': {
                    'image/png': {}, 'image/jpeg': {}, 'image/webp': {}, 'image/bmp': {}}},
                    '400': _error('original is not 0 or 1'), '404': _error('no such sample'),
                    '503': _error('the sample store is unreachable'),
                    **samples_guard.get('responses', {})},
                **_security(samples_guard)}},
            '/samples/{sample}': {'delete': {
                'summary': 'delete a sample',
                'parameters': [sample_id],
                'responses': {'204': {'description': 'deleted'},
                              '404': _error('no such sample'),
                              '503': _error('the sample store is unreachable'),
                              **samples_guard.get('responses', {})},
                **_security(samples_guard)}},
            '/models': {'get': {'summary': 'the live net and the pretrained models',
                                'responses': {'200': _json(_ref('Models'))}}},
            '/model/hidden': {'get': {
                'summary': "first hidden layer's input weights, one 784-vector per unit",
                'parameters': [{'name': 'pretrained', 'in': 'query', 'required': False,
                                'schema': pretrained}],
                'responses': {'200': _json(_ref('Hidden')),
                              '400': _error('pretrained not listed')}}},
            **_insight_paths(pretrained),
        },
        'components': {'securitySchemes': _SECURITY_SCHEMES, 'schemas': {
            'Error': {'type': 'object', 'required': ['error'],
                      'properties': {'error': {'type': 'string'},
                                     'status': _ref('TrainStatus')}},
            'PredictRequest': {
                'type': 'object', 'required': ['image'], 'additionalProperties': False,
                'properties': {
                    'image': {'type': 'string', 'description': 'base64 PNG, JPEG, WebP or BMP '
                              '(standard or URL-safe, data: URL prefix optional)',
                              'example': _EXAMPLE_PNG},
                    'pretrained': {**pretrained, 'nullable': True,
                                   'enum': [None, *pretrained['enum']]},
                    'return_input': {'type': 'boolean', 'default': False},
                    'return_activations': {'type': 'boolean', 'default': False}}},
            'Prediction': {
                'type': 'object', 'required': ['label', 'predictions', 'model'],
                'properties': {
                    'label': {'type': 'integer', 'minimum': 0, 'maximum': 9},
                    'predictions': {'type': 'array', 'minItems': 10, 'maxItems': 10,
                                    'items': {'type': 'object',
                                              'properties': {'label': _INT,
                                                             'confidence': _NUMBER}}},
                    'model': {'type': 'string', 'example': 'live'},
                    'input': {'type': 'array', 'description': 'with return_input: 28 rows of '
                              '28 floats in [0, 1], what the net saw',
                              'items': {'type': 'array', 'items': _NUMBER}},
                    'unsure': _UNSURE, 'activations': _ACTIVATIONS}},
            'TrainResult': {
                'type': 'object',
                'properties': {
                    'accuracy': {'type': 'integer', 'description': 'correct of '
                                 f'{settings.score_samples} random validation samples'},
                    'validation_accuracy': {'type': 'number', 'description': 'fraction of '
                                            'the whole validation split'},
                    'epochs': {'type': 'integer', 'description': 'total epochs trained'},
                    'seconds': _NUMBER, 'samples': {'type': 'boolean'},
                    'before': _ref('Figures'), 'after': _ref('Figures')}},
            'Figures': {
                'type': 'object', 'description': 'validation accuracy on MNIST and on the '
                'held-out stored samples (every fifth by id; null when there are none)',
                'properties': {'mnist': _NUMBER,
                               'samples': {'type': 'number', 'nullable': True},
                               'samples_count': _INT}},
            'Sample': {
                'type': 'object',
                'properties': {'id': _INT, 'label': _INT, 'predicted': _INT,
                               'model': {'type': 'string'},
                               'created': {'type': 'string', 'format': 'date-time'}}},
            'TrainStatus': {
                'type': 'object',
                'properties': {
                    'running': {'type': 'boolean'}, 'epoch': _INT, 'epochs': _INT,
                    'batch': _INT, 'batches': _INT,
                    'history': {'type': 'array', 'items': {
                        'type': 'object', 'properties': {
                            'epoch': _INT, 'loss': _NUMBER, 'val_accuracy': _NUMBER,
                            'seconds': _NUMBER}}}}},
            'Models': {
                'type': 'object',
                'properties': {
                    'live': {'type': 'object', 'properties': {
                        'sizes': _SIZES, 'epochs': _INT,
                        'validation_accuracy': {'type': 'number', 'nullable': True},
                        'learning_rate': _NUMBER, 'batch_size': _INT,
                        'options': {'type': 'object'},
                        'version': {'type': 'integer', 'nullable': True}}},
                    'best': {'type': 'integer', 'nullable': True},
                    'settings': {'type': 'object', 'description': "the server's defaults: "
                                 'default_net, max_epochs, score_samples, max_body'},
                    'pretrained': {'type': 'array', 'items': {
                        'type': 'object', 'properties': {
                            'version': _INT, 'sizes': _SIZES, 'epochs': _INT,
                            'test_accuracy': _NUMBER, 'recipe': {'type': 'string'},
                            'best': {'type': 'boolean'}}}}}},
            'Hidden': {
                'type': 'object',
                'properties': {
                    'model': {'type': 'string'}, 'sizes': _SIZES,
                    'units': {'type': 'array', 'items': {
                        'type': 'array', 'minItems': 784, 'maxItems': 784, 'items': _NUMBER}}}},
        }},
    }))


# ---------------------------------------------------------------------------------------
# Private nets (routes/nets.py): a "net" on every route that reads or changes one.

NET_ROUTES = ('/predict', '/compare', '/train', '/train/status', '/train/events', '/reset',
              '/pretrain', '/model/hidden', '/confusion', '/confusion/examples', '/samples',
              '/samples/export', '/samples/{sample}/image', '/samples/{sample}')
_NET = {'type': 'string', 'default': 'live', 'example': 'live',
        'description': 'the net: "live" (the shared one) or a private net\'s name (POST /nets)'}


def _with_nets(settings, versions, document):
    """``document`` with "net" on the routes of NET_ROUTES (a JSON body's field, else a query
    parameter; 404 for a name that is no net's) and the /nets routes."""
    unknown = _error('no net of that name')
    for path in NET_ROUTES:
        for method, operation in document['paths'][path].items():
            body = operation.get('requestBody', {}).get('content', {}).get('application/json')
            if body is not None:
                schema = body['schema']
                if '$ref' in schema:
                    schema = document['components']['schemas'][schema['$ref'].split('/')[-1]]
                schema.setdefault('properties', {})['net'] = _NET
            if body is None or method == 'get':
                operation.setdefault('parameters', []).append(
                    {'name': 'net', 'in': 'query', 'required': False, 'schema': _NET})
            operation['responses'].setdefault('404', unknown)
    document['paths']['/samples']['post']['requestBody']['content']['application/json'][
        'schema']['properties']['share'] = {
            'type': 'boolean', 'default': False,
            'description': 'a private net\'s drawing: share it with the live net too'}
    name = {'name': 'name', 'in': 'path', 'required': True, 'schema': _NET}
    guard = ({'security': [{'bearer': []}, {'token': []}]} if settings.token else {})
    refused = {'403': _error('a cross-site request'), **(
        {'401': _error('no token, or a wrong one (the live net)')} if settings.token else {})}
    net = {'type': 'object', 'properties': {
        'net': {'type': 'string'}, 'sizes': _SIZES, 'version': _INT, 'epochs': _INT,
        'from': {'type': 'string', 'nullable': True},
        'created': {'type': 'string', 'nullable': True}}}
    document['paths'].update({
        '/nets': {
            'post': {
                'summary': 'a private net of your own: a copy of the live net, of a shipped '
                           'model, or a fresh one; its name (128 random bits) is its key',
                'requestBody': {'required': False, 'content': {'application/json': {
                    'schema': {'type': 'object', 'additionalProperties': False, 'properties': {
                        'from': {'oneOf': [{'type': 'string', 'enum': ['live', 'fresh']},
                                           {'type': 'integer', 'enum': list(versions) or [1]}],
                                 'default': 'live'}}}}}},
                'responses': {'201': _json(net, 'made'), '400': _error('bad "from"'),
                              '415': _error('a body that is not application/json'),
                              '429': _error('this address made --nets-per-hour nets already'),
                              '503': _error('the store is unreachable'),
                              '507': _error('--max-nets nets, or the disk is full'),
                              '403': _error('a cross-site request')}},
            'get': {'summary': "the operator's list of private nets", **guard,
                    'responses': {'200': _json({'type': 'object', 'properties': {
                        'total': _INT, 'nets': {'type': 'array', 'items': net}}}),
                        '503': _error('the store is unreachable'), **refused}}},
        '/nets/{name}': {
            'get': {'summary': 'what a net is: sizes, version, epochs, drawings, training',
                    'parameters': [name],
                    'responses': {'200': _json(net), '404': unknown,
                                  '503': _error('the store is unreachable')}},
            'delete': {'summary': 'delete a private net, its versions and drawings',
                       'parameters': [name], **guard,
                       'responses': {'204': {'description': 'deleted'}, '404': unknown,
                                     '409': _error('it trains, or it is the live net'),
                                     '503': _error('the store is unreachable'), **refused}}},
        '/nets/{name}/versions': {'get': {
            'summary': "a net's kept versions, oldest first, and the current one",
            'parameters': [name],
            'responses': {'200': _json({'type': 'object', 'properties': {
                'versions': {'type': 'array', 'items': {'type': 'object'}},
                'current': {'type': 'integer', 'nullable': True}}}), '404': unknown,
                '503': _error('the store is unreachable')}}},
        '/nets/{name}/rollback': {'post': {
            'summary': 'the net answers as version k did (a new version, cause "rollback")',
            'parameters': [name], **guard,
            'requestBody': {'required': True, 'content': {'application/json': {'schema': {
                'type': 'object', 'required': ['version'], 'additionalProperties': False,
                'properties': {'version': {'type': 'integer', 'minimum': 1}}}}}},
            'responses': {'200': _json(net), '400': _error('bad version'),
                          '404': _error('no such net, or the version was pruned'),
                          '409': _BUSY, '415': _error('a body that is not application/json'),
                          '503': _error('the store is unreachable'),
                          '507': _error('the disk is full'), **refused}}},
        '/samples/{sample}/share': {'post': {
            'summary': "share a private net's drawing with the live net, or stop",
            'parameters': [{'name': 'sample', 'in': 'path', 'required': True,
                            'schema': {'type': 'integer', 'minimum': 1}}],
            'requestBody': {'required': True, 'content': {'application/json': {'schema': {
                'type': 'object', 'required': ['share'], 'additionalProperties': False,
                'properties': {'net': _NET, 'share': {'type': 'boolean'}}}}}},
            'responses': {'200': _json({'type': 'object'}), '400': _error('bad body'),
                          '404': _error('no such net, or no such sample of it'),
                          '415': _error('a body that is not application/json'),
                          '503': _error('the sample store is unreachable'), **refused},
            **guard}},
    })
    return document


# ---------------------------------------------------------------------------------------
# Operations (routes/health.py) and the Open Inference Protocol (routes/inference.py).

def _with_operations(settings, versions, document):
    """``document`` with the health, metrics and /v2 routes and their schemas."""
    ready_checks = {'type': 'object', 'additionalProperties': {'type': 'string'},
                    'description': 'each check: "ok" or why not (pretrained, live, storage, '
                                   'samples; stopping while the server shuts down)'}
    metrics_guarded = settings.metrics_token is not None or settings.token is not None
    metrics = {'summary': 'Prometheus metrics, summed over every worker (text format 0.0.4)',
               'responses': {'200': {'description': 'the metrics', 'content': {
                   'text/plain': {'schema': {'type': 'string'}}}},
                   '404': _error('metrics are off (--no-metrics)')}}
    if metrics_guarded:
        metrics['security'] = [{'bearer': []}, {'token': []}]
        metrics['responses']['401'] = _error('no token, or a wrong one (BTF_METRICS_TOKEN, '
                                             'else BTF_TOKEN)')
    name = {'name': 'name', 'in': 'path', 'required': True,
            'schema': {'type': 'string', 'enum': ['live', 'mnist']}}
    version = {'name': 'version', 'in': 'path', 'required': True,
               'schema': {'type': 'string',
                          **({'enum': [str(v) for v in versions]} if versions else {})},
               'description': 'a version of mnist (live has none)'}
    unknown = _error('no such model or version')
    not_ready = _error('not ready: the failing checks')
    infer = {'summary': 'read n digits: FP32 [n, 784] pixels in [0, 1] in, FP32 [n, 10] out',
             'requestBody': {'required': True, 'content': {
                 'application/json': {'schema': _ref('InferenceRequest')},
                 'application/octet-stream': {'schema': {
                     'type': 'string', 'format': 'binary', 'description': 'the binary data '
                     'extension: JSON of Inference-Header-Content-Length bytes, then the '
                     'little-endian FP32 data'}}}},
             'responses': {'200': _json(_ref('InferenceResponse')),
                           '400': _error('bad JSON, input name, datatype, shape, outputs, or '
                                         'values that are not finite in [0, 1]'),
                           '404': unknown,
                           '413': _error(f'body over {settings.max_body} bytes')}}
    document['paths'].update({
        '/health/live': {'get': {'summary': 'liveness: the process serves',
                                 'responses': {'200': _json({'type': 'object'})}}},
        '/health/ready': {'get': {
            'summary': 'readiness: pretrained models and the live net loaded, state writable, '
                       'sample store open',
            'responses': {'200': _json({'type': 'object', 'properties': {
                'status': {'type': 'string', 'enum': ['ready']}, 'checks': ready_checks}}),
                '503': not_ready}}},
        '/metrics': {'get': metrics},
        '/v2': {'get': {'summary': 'Open Inference Protocol: server metadata',
                        'responses': {'200': _json({'type': 'object', 'properties': {
                            'name': {'type': 'string'}, 'version': {'type': 'string'},
                            'extensions': {'type': 'array', 'items': {'type': 'string'}}}})}}},
        '/v2/health/live': {'get': {'summary': 'Open Inference Protocol: liveness',
                                    'responses': {'200': _json({'type': 'object'})}}},
        '/v2/health/ready': {'get': {'summary': 'Open Inference Protocol: readiness',
                                     'responses': {'200': _json({'type': 'object'}),
                                                   '503': not_ready}}},
        '/v2/models/{name}': {'get': {
            'summary': 'model metadata (no version: mnist is the best one)',
            'parameters': [name],
            'responses': {'200': _json(_ref('ModelMetadata')), '404': unknown}}},
        '/v2/models/{name}/versions/{version}': {'get': {
            'summary': 'model metadata of a version', 'parameters': [name, version],
            'responses': {'200': _json(_ref('ModelMetadata')), '404': unknown}}},
        '/v2/models/{name}/ready': {'get': {
            'summary': 'whether the model answers', 'parameters': [name],
            'responses': {'200': _json({'type': 'object'}), '404': unknown}}},
        '/v2/models/{name}/versions/{version}/ready': {'get': {
            'summary': 'whether the model version answers', 'parameters': [name, version],
            'responses': {'200': _json({'type': 'object'}), '404': unknown}}},
        '/v2/models/{name}/infer': {'post': {**infer, 'parameters': [name]}},
        '/v2/models/{name}/versions/{version}/infer': {'post': {
            **infer, 'parameters': [name, version]}},
    })
    tensor = {'type': 'object', 'required': ['name', 'datatype', 'shape'], 'properties': {
        'name': {'type': 'string'}, 'datatype': {'type': 'string', 'enum': ['FP32']},
        'shape': {'type': 'array', 'items': _INT, 'minItems': 2, 'maxItems': 2},
        'parameters': {'type': 'object'},
        'data': {'type': 'array', 'description': 'row-major numbers, flat or nested',
                 'items': {}}}}
    document['components']['schemas'].update({
        'InferenceRequest': {
            'type': 'object', 'required': ['inputs'], 'properties': {
                'id': {'type': 'string'}, 'parameters': {'type': 'object'},
                'inputs': {'type': 'array', 'minItems': 1, 'maxItems': 1, 'items': {
                    **tensor, 'required': ['name', 'datatype', 'shape'], 'example': {
                        'name': 'input', 'datatype': 'FP32', 'shape': [1, 784],
                        'data': [0.0] * 784}}},
                'outputs': {'type': 'array', 'items': {'type': 'object', 'properties': {
                    'name': {'type': 'string', 'enum': ['confidences', 'unsure']},
                    'parameters': {'type': 'object'}}}}}},
        'InferenceResponse': {
            'type': 'object', 'properties': {
                'model_name': {'type': 'string'}, 'model_version': {'type': 'string'},
                'id': {'type': 'string'}, 'outputs': {'type': 'array', 'items': {
                    **tensor, 'properties': {
                        **tensor['properties'],
                        'name': {'type': 'string', 'enum': ['confidences', 'unsure']},
                        'datatype': {'type': 'string', 'enum': ['FP32', 'BYTES']},
                        'shape': {'type': 'array', 'items': _INT, 'minItems': 1,
                                  'maxItems': 2}}}}}},
        'ModelMetadata': {
            'type': 'object', 'properties': {
                'name': {'type': 'string'}, 'platform': {'type': 'string'},
                'versions': {'type': 'array', 'items': {'type': 'string'}},
                'inputs': {'type': 'array', 'items': {'type': 'object'}},
                'outputs': {'type': 'array', 'items': {'type': 'object'}}}},
    })
    return document
