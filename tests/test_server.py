"""The service against a real Sanic server on a free port (one fresh app, models and state
folder per test), real PNGs made with OpenCV and a training file built by preprocess.py from
real MNIST (only for the tests that train)."""
import base64
import http.client
import json
import os
import re
import signal
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np
import pytest

import better_tensorflow as btf
import imaging
from tests.conftest import (
    DIGIT,
    ROOT,
    Answer,
    Server,
    confidences,
    drawn_digit,
    file_digest,
    free_port,
    png_b64,
    predict_locally,
    read_events,
    wait_for,
)

ROUTES = ['/', '/health', '/predict', '/train', '/train/status', '/train/events', '/reset',
          '/pretrain', '/models', '/model/hidden', '/openapi.json']


# ---------------------------------------------------------------------------------------
# Routes.

def test_health_page_and_static_files(serve, tmp_path):
    with serve() as s:
        health = s.get('/health')
        assert health.status == 200 and health.json == {'status': 'ok'}
        placeholder = s.get('/')
        assert placeholder.status == 200 and b'not installed yet' in placeholder.body
        (tmp_path / 'static' / 'index.html').write_text('<title>the page</title>')
        (tmp_path / 'static' / 'app.js').write_text('let x = 1;')
        (tmp_path / 'secret.txt').write_text('TOP SECRET')
        page = s.get('/')
        assert page.status == 200 and page.body == b'<title>the page</title>'
        assert page.headers['Content-Type'].startswith('text/html')
        script = s.get('/static/app.js')
        assert script.status == 200 and script.body == b'let x = 1;'
        for path in ('/static/missing.js', '/static/../secret.txt', '/static/%2e%2e/secret.txt'):
            answer = s.get(path)
            assert answer.status == 404 and 'error' in answer.json, path
            assert b'TOP SECRET' not in answer.body


def test_unknown_route_wrong_method_and_cors_on_errors(serve):
    origin = {'Origin': 'http://elsewhere.example'}
    with serve() as s:
        missing = s.get('/nowhere', headers=origin)
        assert missing.status == 404
        assert missing.json == {'error': 'nothing at /nowhere: the routes are listed at '
                                         '/openapi.json.'}
        assert missing.headers['Access-Control-Allow-Origin'] == '*'
        for method, path, allowed in (('GET', '/predict', 'POST'), ('DELETE', '/train', 'GET'),
                                      ('POST', '/models', 'GET'), ('PUT', '/reset', 'GET')):
            answer = s.call(method, path, headers=origin)
            assert answer.status == 405, (method, path)
            assert answer.json['error'].startswith(f'{method} is not allowed on {path}: use ')
            assert allowed in answer.headers['Allow']
            assert answer.headers['Access-Control-Allow-Origin'] == '*'
        # Without an Origin header too (curl), and on success.
        assert s.get('/health').headers['Access-Control-Allow-Origin'] == '*'


def test_preflight_succeeds_for_every_route(serve):
    with serve() as s:
        for path in ROUTES:
            method = 'POST' if path in ('/predict', '/train', '/reset', '/pretrain') else 'GET'
            answer = s.call('OPTIONS', path, headers={
                'Origin': 'http://elsewhere.example', 'Access-Control-Request-Method': method,
                'Access-Control-Request-Headers': 'content-type'})
            assert answer.status == 204, (path, answer)
            assert answer.headers['Access-Control-Allow-Origin'] == '*'
            assert method in answer.headers['Access-Control-Allow-Methods']
            # Only methods some route answers (sanic-cors's default also named PUT, PATCH).
            assert set(answer.headers['Access-Control-Allow-Methods'].split(', ')) == {
                'GET', 'HEAD', 'POST', 'DELETE', 'OPTIONS'}
            assert 'content-type' in answer.headers['Access-Control-Allow-Headers'].lower()


def test_every_operation_documents_the_413_of_a_too_long_head(serve):
    """Any request can carry a query string past Sanic's head limit: the answer is a 413 with
    a JSON error, and the document says so for every operation (the fuzz test found GET
    /samples answering an undocumented 413)."""
    with serve() as s:
        answer = s.get('/samples?label=' + 'x' * 9000)
        assert answer.status == 413 and 'head' in answer.json['error']
        document = s.get('/openapi.json').json
        operations = [(path, method, op) for path, methods in document['paths'].items()
                      for method, op in methods.items()]
        assert len(operations) > 20
        assert all('413' in op['responses'] for _, _, op in operations), \
            [(path, method) for path, method, op in operations if '413' not in op['responses']]
        # a route's own 413 (a body too large) is kept
        assert 'body' in document['paths']['/predict']['post']['responses']['413']['description']


def test_openapi_lists_exactly_the_routes(serve):
    def normalise(path):
        return re.sub(r'<[^>]+>|\{[^}]+\}', '{}', '/' + path.lstrip('/'))

    with serve() as s:
        document = s.get('/openapi.json').json
        routes = {(normalise(route.path), method.lower())
                  for route in s.app.router.routes for method in route.methods
                  if method not in ('HEAD', 'OPTIONS')}
        request = document['components']['schemas']['PredictRequest']['properties']
        assert request['pretrained']['enum'] == [None, 0, 1, 2]
        example = s.post('/predict', {'image': request['image']['example']})
        assert example.status == 200 and example.json['label'] in range(10)
    assert document['openapi'].startswith('3.')
    documented = {(normalise(path), method) for path, item in document['paths'].items()
                  for method in item}
    assert documented == routes
    assert {path for path, _ in routes} >= set(ROUTES)
    # Every documented error answer is the one JSON error shape.
    for item in document['paths'].values():
        for operation in item.values():
            for status, response in operation['responses'].items():
                if status.startswith('4') and status not in ('409',):
                    schema = response['content']['application/json']['schema']
                    assert schema == {'$ref': '#/components/schemas/Error'}
    assert document['paths']['/train']['get']['parameters'][0]['schema']['maximum'] == 100


def test_predict_answers_with_the_live_or_a_pretrained_net(serve, models):
    _, nets = models
    with serve() as s:
        live = btf.Graph.from_file(s.state / 'live.npz')
        answer = s.post('/predict', {'image': DIGIT})
        assert answer.status == 200, answer
        got = answer.json
        assert got['model'] == 'live' and 'input' not in got
        np.testing.assert_allclose(confidences(got), predict_locally(live), rtol=1e-5)
        assert got['label'] == int(np.argmax(confidences(got)))
        for pretrained, model in ((None, 'live'), (0, 'live'), (1, 'v1'), (2, 'v2')):
            got = s.post('/predict', {'image': DIGIT, 'pretrained': pretrained}).json
            assert got['model'] == model
            net = live if model == 'live' else nets[pretrained]
            np.testing.assert_allclose(confidences(got), predict_locally(net), rtol=1e-5)
        got = s.post('/predict', {'image': DIGIT, 'return_input': True}).json
        np.testing.assert_allclose(np.array(got['input']), imaging.prepare(DIGIT), atol=1e-6)
        # One rule for every route's body (docs/api.md, "Bodies"): application/json only.
        for kind in ('text/plain', 'application/x-www-form-urlencoded', 'multipart/form-data',
                     None):
            for route in ('/predict', '/compare', '/samples', '/train'):
                answer = untyped_post(s.port, route, json.dumps({'image': DIGIT}), kind)
                assert answer.status == 415, (route, kind, answer)
                assert answer.json['error'] == (
                    f'{route} takes a JSON body sent as Content-Type: application/json, got '
                    + (f'Content-Type "{kind}".' if kind else 'no Content-Type.'))
        assert s.post('/predict', json.dumps({'image': DIGIT}), headers={
            'Content-Type': 'application/json; charset=utf-8'}).status == 200


def untyped_post(port, path, body, kind):
    """A POST with the Content-Type ``kind``, or none at all (the test client adds one)."""
    conn = http.client.HTTPConnection('127.0.0.1', port, timeout=60)
    try:
        conn.request('POST', path, body=body, headers={'Content-Type': kind} if kind else {})
        response = conn.getresponse()
        return Answer(response.status, response.headers, response.read())
    finally:
        conn.close()


BAD_PREDICTS = [
    (None, 400, 'the body is empty'),
    ('{"image": ', 400, 'the body is not valid JSON'),
    ('\xff\xfe', 400, 'the body is not valid JSON'),
    ('[1, 2]', 400, 'the body must be a JSON object'),
    ('"text"', 400, 'the body must be a JSON object'),
    ({}, 400, 'image must be a string'),
    ({'image': None}, 400, 'image must be a string'),
    ({'image': 7}, 400, 'image must be a string'),
    ({'image': ['a']}, 400, 'image must be a string'),
    ({'image': DIGIT, 'colour': 'red'}, 400, "unknown field(s) ['colour']"),
    ({'image': 'iVBOR$w0K'}, 400, 'invalid base64'),
    ({'image': 'data:image/png,abc'}, 400, 'a data URL must look like'),
    ({'image': base64.b64encode(b'plain text, not a picture').decode()}, 400,
     'not a PNG, JPEG, WebP or BMP'),
    ({'image': DIGIT[:200]}, 400, 'truncated'),
    ({'image': DIGIT, 'pretrained': 3}, 400, 'pretrained must be one of [1, 2]'),
    ({'image': DIGIT, 'pretrained': -1}, 400, 'pretrained must be one of [1, 2]'),
    ({'image': DIGIT, 'pretrained': True}, 400, 'got true'),
    ({'image': DIGIT, 'pretrained': 2.0}, 400, 'got 2.0'),
    ({'image': DIGIT, 'pretrained': '2'}, 400, 'got "2"'),
    ({'image': DIGIT, 'return_input': 'yes'}, 400, 'return_input must be true or false'),
    ({'image': png_b64(np.zeros((280, 280, 4), np.uint8))}, 422, 'no digit found'),
    ({'image': png_b64(np.full((50, 50, 3), 255, np.uint8))}, 422, 'no digit found'),
    ({'image': png_b64(np.zeros((4000, 4500), np.uint8))}, 413, '4500x4000 = 18000000 pixels'),
]


def test_every_bad_predict_is_a_clear_4xx_and_changes_nothing(serve):
    with serve() as s:
        folder = s.state
        before = s.get('/models').json, file_digest(folder / 'live.npz')
        for body, status, message in BAD_PREDICTS:
            answer = s.post('/predict', body)
            assert answer.status == status, (body if body is None else str(body)[:80], answer)
            assert message in answer.json['error'], answer
            assert answer.headers['Access-Control-Allow-Origin'] == '*'
        assert (s.get('/models').json, file_digest(folder / 'live.npz')) == before
        assert s.post('/predict', {'image': DIGIT}).status == 200


def test_body_over_the_size_limit_is_413(serve):
    with serve(max_body=100_000) as s:
        answer = s.post('/predict', json.dumps({'image': 'A' * 150_000}))
        assert answer.status == 413
        assert answer.json == {'error': 'the request is larger than the limit of 100000 bytes.'}
        assert answer.headers['Access-Control-Allow-Origin'] == '*'
        assert s.post('/predict', {'image': DIGIT}).status == 200


def test_models_lists_live_and_pretrained(serve, models):
    _, nets = models
    with serve() as s:
        got = s.get('/models').json
    assert got['best'] == 2
    assert got['pretrained'] == [
        {'version': 1, 'sizes': [784, 20, 10], 'epochs': 0, 'test_accuracy': 0.1,
         'recipe': 'seed 1', 'best': False},
        {'version': 2, 'sizes': [784, 30, 10], 'epochs': 0, 'test_accuracy': 0.2,
         'recipe': 'seed 2', 'best': True}]
    # At first start the live net is a copy of the best pretrained model.
    assert got['live'] == {'sizes': [784, 30, 10], 'epochs': 0, 'validation_accuracy': None,
                           'learning_rate': 0.5, 'batch_size': 128,
                           'options': nets[2].options, 'version': 1}


def test_hidden_units_are_the_first_layer_weights(serve, models):
    _, nets = models
    with serve() as s:
        s.get('/reset')
        live = btf.Graph.from_file(s.state / 'live.npz')
        for query, model, net in (('', 'live', live), ('?pretrained=0', 'live', live),
                                  ('?pretrained=1', 'v1', nets[1])):
            got = s.get('/model/hidden' + query).json
            assert got['model'] == model and got['sizes'] == list(net.sizes)
            units = np.array(got['units'])
            assert units.shape == (net.sizes[1], 784)
            np.testing.assert_allclose(units, net.weights[0].T, atol=5e-5)
        for query, shown in (('?pretrained=9', '9'), ('?pretrained=v1', '"v1"'),
                             ('?pretrained=1.0', '"1.0"'), ('?pretrained=', '""'),
                             ('?pretrained=null', '"null"')):
            answer = s.get('/model/hidden' + query)
            assert answer.status == 400
            assert answer.json['error'] == ('pretrained must be one of [1, 2], or null/0 for '
                                            f'the live net; got {shown}.')


def test_reset_and_pretrain_replace_the_live_net_and_save_it(serve, models):
    _, nets = models
    with serve() as s:
        live_file = s.state / 'live.npz'
        for method in ('GET', 'POST'):
            answer = s.call(method, '/reset')
            assert answer.status == 200 and answer.body == b'OK'
            saved = btf.Graph.from_file(live_file)
            assert saved.sizes == (784, 30, 10) and saved.learning_rate == 0.5
            assert saved.epochs == 0
            assert not np.array_equal(saved.weights[0], nets[2].weights[0])
            got = s.post('/predict', {'image': DIGIT}).json
            np.testing.assert_allclose(confidences(got), predict_locally(saved), rtol=1e-5)

            answer = s.call(method, '/pretrain')
            assert answer.status == 200 and answer.body == b'OK'
            saved = btf.Graph.from_file(live_file)
            for a, b in zip(saved.weights + saved.biases, nets[2].weights + nets[2].biases):
                np.testing.assert_array_equal(a, b)
            got = s.post('/predict', {'image': DIGIT}).json
            np.testing.assert_allclose(confidences(got), predict_locally(nets[2]), rtol=1e-5)


def test_without_models_json_the_server_still_runs(serve, tmp_path):
    empty = tmp_path / 'no-models'
    with serve(models_dir=empty) as s:
        got = s.get('/models').json
        assert got['pretrained'] == [] and got['best'] is None
        assert got['live']['sizes'] == [784, 30, 10] and got['live']['epochs'] == 0
        answer = s.get('/pretrain')
        assert answer.status == 503
        assert 'no pretrained models' in answer.json['error']
        assert 'make models' in answer.json['error']
        answer = s.post('/predict', {'image': DIGIT, 'pretrained': 1})
        assert answer.status == 400
        assert 'no pretrained models are installed' in answer.json['error']
        assert s.post('/predict', {'image': DIGIT}).status == 200
    assert (tmp_path / 'state' / 'live.npz').exists()


def test_broken_pretrained_files_are_skipped(serve, models):
    folder, _ = models
    manifest = json.loads((folder / 'models.json').read_text())
    (folder / 'model-v2.npz').write_bytes(b'garbage')  # the best one: sha256 mismatch
    manifest['models'].append({'version': 3, 'file': '../escape.npz'})
    (folder / 'models.json').write_text(json.dumps(manifest))
    with serve() as s:
        got = s.get('/models').json
    assert [m['version'] for m in got['pretrained']] == [1] and got['best'] == 1


def test_train_answers_after_training_and_streams_progress(serve_data, dataset):
    serve = serve_data
    with ThreadPoolExecutor(1) as pool, serve() as s:
        folder = s.state
        listener = pool.submit(read_events, s.port)
        wait_for(lambda: s.app.ctx.streams.queues, 'the event stream')
        answer = s.post('/train', {'epochs': 2})
        assert answer.status == 200, answer
        result = answer.json
        events, headers = listener.result(timeout=60)
        status = s.get('/train/status').json
        models = s.get('/models').json

        # The answer: numbers that agree with the saved net on the real validation split.
        assert set(result) == {'accuracy', 'validation_accuracy', 'epochs', 'seconds',
                               'samples', 'before', 'after', 'version', 'promoted', 'gate'}
        assert result['version'] == 2  # the first start saved version 1
        assert result['promoted'] is True and result['gate']['passed'] is True
        assert result['samples'] is False and result['before']['samples'] is None
        saved = btf.Graph.from_file(folder / 'live.npz')
        assert result['epochs'] == saved.epochs == 2
        assert result['validation_accuracy'] == pytest.approx(saved.evaluate(*dataset['val']),
                                                            abs=5e-5)
        assert result['validation_accuracy'] > 0.6  # trained, not chance
        assert isinstance(result['accuracy'], int) and 40 <= result['accuracy'] <= 100
        assert result['seconds'] > 0

        # The status: the whole job, two epochs of 32 batches (4,000 / 128).
        assert status['running'] is False
        assert (status['epoch'], status['epochs'], status['batch'], status['batches']) == \
            (2, 2, 32, 32)
        assert [h['epoch'] for h in status['history']] == [1, 2]
        assert status['history'][-1]['val_accuracy'] == result['validation_accuracy']
        assert models['live']['epochs'] == 2
        assert models['live']['validation_accuracy'] == result['validation_accuracy']

        # The stream: status, progress, one event per epoch, then done.
        assert headers['Content-Type'] == 'text/event-stream'
        assert headers['Access-Control-Allow-Origin'] == '*'
        names = [name for name, _ in events]
        assert names[0] == 'status' and names[-1] == 'done'
        assert names.count('epoch') == 2 and 'progress' in names
        assert names.index('epoch') < len(names) - 1
        view = ('view_samples', 'confusion', 'units')  # the large part: not in the history
        assert [{k: v for k, v in data.items() if k not in view}
                for name, data in events if name == 'epoch'] == \
            [{**h, 'epochs': 2} for h in status['history']]
        for name, data in events:
            if name == 'progress':
                assert data['epochs'] == 2 and data['batches'] == 32
                assert 1 <= data['epoch'] <= 2 and 1 <= data['batch'] <= 32
        assert events[-1][1] == result

        # GET with a query string, the default of 1 epoch, and training continues the net.
        assert s.get('/train?epochs=1').json['epochs'] == 3
        assert s.get('/train').json['epochs'] == 4
        assert s.post('/train').json['epochs'] == 5
    # A restart restores the trained net and its validation accuracy.
    with serve() as s:
        restored = s.get('/models').json['live']
        assert restored['epochs'] == 5
        assert restored['validation_accuracy'] == pytest.approx(
            btf.Graph.from_file(folder / 'live.npz').evaluate(*dataset['val']), abs=5e-5)


@pytest.mark.parametrize('method, epochs', [
    ('GET', '0'), ('GET', '101'), ('GET', '-1'), ('GET', '1.5'), ('GET', 'abc'), ('GET', ''),
    ('GET', '9' * 5000), ('POST', 0), ('POST', 101), ('POST', 2.0), ('POST', True),
    ('POST', '3'), ('POST', None), ('POST', [1]),
])
def test_bad_epochs_are_400(serve, method, epochs):
    with serve() as s:
        if method == 'GET':
            answer = s.get(f'/train?epochs={epochs}')
        else:
            answer = s.post('/train', {'epochs': epochs})
        assert answer.status == 400, answer
        assert answer.json['error'].startswith(
            'epochs must be an integer from 1 to 100 (--max-epochs), got ')
        assert s.get('/train/status').json['running'] is False
        assert s.get('/models').json['live']['epochs'] == 0


def test_train_body_errors_and_configured_maximum(serve):
    with serve(max_epochs=3) as s:
        for body, message in (('nope', 'not valid JSON'), ('[3]', 'must be a JSON object'),
                              ({'epoch': 3}, "unknown field(s) ['epoch']")):
            answer = s.post('/train', body)
            assert answer.status == 400 and message in answer.json['error']
        answer = s.get('/train?epochs=4')
        assert answer.status == 400
        assert answer.json['error'] == \
            'epochs must be an integer from 1 to 3 (--max-epochs), got 4.'


def test_train_without_data_is_503(serve, tmp_path):
    with serve(data_path=tmp_path / 'missing.npz') as s:
        answer = s.get('/train')
        assert answer.status == 503
        assert "training needs MNIST's training images" in answer.json['error']
        assert 'make data' in answer.json['error']
        assert str(tmp_path) not in answer.json['error']
        settings = s.get('/models').json['settings']
        assert settings['can_train'] is False
        assert settings['cannot_train'] == answer.json['error']
        assert s.get('/train/status').json['running'] is False
        (tmp_path / 'missing.npz').write_bytes(b'not a zip')
        answer = s.get('/train')
        assert answer.status == 503 and 'cannot be read' in answer.json['error']
        assert str(tmp_path) not in answer.json['error']
        assert s.get('/models').json['settings']['can_train'] is True  # the file is there


def test_server_keeps_answering_while_training(serve_data, models):
    _, nets = models
    with ThreadPoolExecutor(1) as pool, serve_data() as s:
        live_file = s.state / 'live.npz'
        saved_before = file_digest(live_file)
        before = confidences(s.post('/predict', {'image': DIGIT}).json)
        training = pool.submit(s.post, '/train', {'epochs': 100})
        wait_for(lambda: s.get('/train/status').json['epoch'] >= 3, 'three epochs')

        # Answers come while the job runs, from the last complete (the untrained) net.
        answer = s.post('/predict', {'image': DIGIT})
        assert answer.status == 200
        np.testing.assert_array_equal(confidences(answer.json), before)
        assert s.get('/health').json == {'status': 'ok'}
        assert s.get('/models').json['live']['epochs'] == 0
        for method, path, body in (('POST', '/train', {'epochs': 1}), ('GET', '/train', None),
                                   ('GET', '/reset', None), ('POST', '/pretrain', None)):
            busy = s.call(method, path, body)
            assert busy.status == 409, (path, busy)
            assert 'while training runs' in busy.json['error']
            assert busy.json['status']['running'] is True
            assert busy.json['status']['epochs'] == 100
            assert busy.json['status']['epoch'] >= 3
        status = s.get('/train/status').json
        assert status['running'] is True and status['epoch'] < 100
        assert not training.done()
    # Shutting down stops the job after its current batch; the live net stays as it was.
    answer = training.result(timeout=60)
    assert answer.status == 503 and 'shutting down' in answer.json['error']
    assert file_digest(live_file) == saved_before


def test_training_goes_on_when_the_client_hangs_up(serve_data):
    with serve_data() as s:
        conn = http.client.HTTPConnection('127.0.0.1', s.port, timeout=10)
        conn.request('GET', '/train?epochs=2')
        wait_for(lambda: s.get('/train/status').json['running'], 'the job to start')
        conn.close()
        wait_for(lambda: not s.get('/train/status').json['running'], 'the job to end')
        assert s.get('/models').json['live']['epochs'] == 2
        assert btf.Graph.from_file(s.state / 'live.npz').epochs == 2


def test_pretrained_copy_is_never_aliased(serve_data, models):
    folder, nets = models
    pretrained_file = file_digest(folder / 'model-v2.npz')
    with serve_data() as s:
        assert s.get('/pretrain').body == b'OK'
        before = confidences(s.post('/predict', {'image': DIGIT, 'pretrained': 2}).json)
        assert s.post('/train', {'epochs': 1}).status == 200
        after = confidences(s.post('/predict', {'image': DIGIT, 'pretrained': 2}).json)
        live = confidences(s.post('/predict', {'image': DIGIT}).json)
        assert s.get('/models').json['pretrained'][1]['epochs'] == 0
        # /pretrain again gives the untouched pretrained net back.
        assert s.get('/pretrain').body == b'OK'
        again = confidences(s.post('/predict', {'image': DIGIT}).json)
    np.testing.assert_array_equal(after, before)
    np.testing.assert_allclose(before, predict_locally(nets[2]), rtol=1e-5)
    assert not np.allclose(live, before, atol=1e-3)
    np.testing.assert_array_equal(again, before)
    assert file_digest(folder / 'model-v2.npz') == pretrained_file


def test_restart_restores_the_live_net(serve, models, tmp_path):
    with serve() as s:
        s.get('/reset')
        first = s.post('/predict', {'image': DIGIT}).json
        live = s.get('/models').json['live']
    with serve() as s:
        assert s.post('/predict', {'image': DIGIT}).json == first
        assert s.get('/models').json['live'] == live
    # A broken live file is logged and replaced by the best pretrained model.
    _, nets = models
    (tmp_path / 'state' / 'live.npz').write_bytes(b'broken')
    with serve() as s:
        got = s.post('/predict', {'image': DIGIT}).json
        np.testing.assert_allclose(confidences(got), predict_locally(nets[2]), rtol=1e-5)


def test_mnist_test_images_through_predict_score_like_the_net(mnist, tmp_path):
    """MNIST test digits sent as PNGs score within 0.5 points of the net's own accuracy."""
    (X, y), (X_test, y_test) = mnist
    net = btf.Graph((784, 30, 10), 0.5, 128, seed=0)
    net.feed((X[:30000], y[:30000]))
    net.run(epochs=3, progress=False)
    folder = tmp_path / 'models'
    net.save(folder / 'live.npz')
    n = 1500
    images, labels = X_test[:n], y_test[:n]
    own = net.evaluate(images, labels)
    with Server(models_dir=folder, state_dir=folder, data_path=tmp_path / 'none.npz') as s:
        def label(image):
            png = png_b64(image.reshape(28, 28))
            return s.post('/predict', {'image': png}).json['label']
        with ThreadPoolExecutor(4) as pool:
            predicted = np.array(list(pool.map(label, images)))
    served = np.mean(predicted == labels)
    assert own > 0.85
    assert abs(served - own) <= 0.005, (served, own)


def test_command_line_and_environment(tmp_path):
    port = free_port()
    env = {**os.environ, 'DOC_PORT': str(port), 'HOST': '127.0.0.1'}
    env.pop('PORT', None)
    process = subprocess.Popen(
        [sys.executable, str(ROOT / 'server.py'), '--models', str(tmp_path / 'models'),
         '--state', str(tmp_path / 'state'), '--data', str(tmp_path / 'none.npz'),
         '--max-epochs', '7'],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        def health():
            try:
                conn = http.client.HTTPConnection('127.0.0.1', port, timeout=5)
                conn.request('GET', '/health')
                return conn.getresponse().status == 200
            except OSError:
                assert process.poll() is None, process.stdout.read()
                return False
        wait_for(health, 'the server to start')
        conn = http.client.HTTPConnection('127.0.0.1', port, timeout=5)
        conn.request('GET', '/train?epochs=8')
        answer = conn.getresponse()
        assert answer.status == 400
        assert json.loads(answer.read())['error'] == \
            'epochs must be an integer from 1 to 7 (--max-epochs), got 8.'
    finally:
        process.send_signal(signal.SIGINT)  # never lost (test_operations.py's first instants)
        try:
            output = process.communicate(timeout=60)[0]
        except subprocess.TimeoutExpired:
            process.kill()
            raise
    assert process.returncode == 0, output
    assert (tmp_path / 'state' / 'live.npz').exists()
    assert 'no pretrained models' in output


def test_an_old_live_net_in_models_moves_to_the_state_folder(serve, models, tmp_path, caplog):
    folder, nets = models
    old = btf.Graph((784, 30, 10), 0.5, 128, seed=42)
    old.save(folder / 'live.npz')
    with serve() as s:
        assert s.get('/models').json['live']['epochs'] == 0
        np.testing.assert_allclose(confidences(s.post('/predict', {'image': DIGIT}).json),
                                   predict_locally(old), rtol=1e-5)
    assert not (folder / 'live.npz').exists()
    assert (tmp_path / 'state' / 'live.npz').exists()
    assert f'moved {folder / "live.npz"} to the state folder' in caplog.text
    with serve() as s:  # once: the next start finds it in the state folder
        np.testing.assert_allclose(confidences(s.post('/predict', {'image': DIGIT}).json),
                                   predict_locally(old), rtol=1e-5)


def test_the_training_process_loads_neither_sanic_nor_opencv():
    """The spawned training process imports its target, service.trainer: the library and
    the data loader only."""
    code = ('import sys, service.trainer; '
            "print(sorted(m for m in ('sanic', 'cv2', 'orjson', 'service.app') "
            'if m in sys.modules))')
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                         cwd=ROOT, check=True).stdout.strip()
    assert out == '[]'


def test_only_images_small_in_pixels_and_bytes_are_decoded_on_the_event_loop(serve,
                                                                             monkeypatch):
    """A 28x28 JPEG carrying 90 KB of comment segments is cheap in pixels but not in bytes:
    it is decoded in the pool, as every large body is; the page's drawing on the loop."""
    threads = []
    prepare = imaging.prepare

    def recorded(data):
        threads.append(threading.current_thread().name)
        return prepare(data)
    monkeypatch.setattr(imaging, 'prepare', recorded)
    digit = cv2.resize(drawn_digit()[:, :, 3], (28, 28), interpolation=cv2.INTER_AREA)
    jpeg = cv2.imencode('.jpg', digit)[1].tobytes()  # white ink on black, as MNIST
    comment = b'\xff\xfe' + (60_000).to_bytes(2, 'big') + b'c' * 59_998
    padded = jpeg[:2] + comment * 2 + jpeg[2:]
    page = png_b64(cv2.resize(drawn_digit(), (56, 56), interpolation=cv2.INTER_AREA))
    with serve() as s:
        for image in (page, 'data:image/jpeg;base64,' + base64.b64encode(padded).decode()):
            assert s.post('/predict', {'image': image}).status == 200
    assert not threads[0].startswith('decode') and threads[1].startswith('decode'), threads
