"""The Open Inference Protocol routes (/v2, service/routes/inference.py) against a real server:
through raw HTTP, and through a real client of the protocol (tritonclient.http)."""
import json
import time

import numpy as np
import pytest
import tritonclient.http as triton
from prometheus_client.parser import text_string_to_metric_families
from tritonclient.utils import InferenceServerException

import imaging
from service import insight
from service.insight import BLANK
from tests.conftest import DIGIT, body_of, call, raw_request, status_of

ROWS = 256  # the most a request may send as JSON numbers


def pixels(n, seed=0):
    return np.random.default_rng(seed).random((n, 784), dtype=np.float32)


def request(X, **tensor):
    return {'inputs': [{'name': 'input', 'datatype': 'FP32', 'shape': list(X.shape),
                        'data': X.ravel().tolist(), **tensor}]}


def outputs(answer):
    """The confidences of a JSON answer (the first output; "unsure" may follow)."""
    output = answer['outputs'][0]
    assert output['name'] == 'confidences' and output['datatype'] == 'FP32'
    assert [o['name'] for o in answer['outputs'][1:]] in ([], ['unsure'])
    return np.array(output['data'], np.float32).reshape(output['shape'])


def test_server_and_model_metadata(serve, models):
    _, nets = models
    with serve() as s:
        server = s.get('/v2').json
        assert server['name'] == 'better-tensorflow' and server['models'] == {
            'live': [], 'mnist': ['1', '2']}
        assert s.get('/v2/health/live').json == {'live': True}
        assert s.get('/v2/health/ready').json == {'ready': True}
        best = s.get('/v2/models/mnist').json
        assert best['versions'] == ['1', '2'] and best['sizes'] == [784, 30, 10]
        assert best['inputs'] == [{'name': 'input', 'datatype': 'FP32', 'shape': [-1, 784]}]
        assert best['outputs'] == [{'name': 'confidences', 'datatype': 'FP32',
                                    'shape': [-1, 10]},
                                   {'name': 'unsure', 'datatype': 'BYTES', 'shape': [-1]}]
        first = s.get('/v2/models/mnist/versions/1').json
        assert first['versions'] == ['1'] and first['sizes'] == list(nets[1].sizes)
        assert s.get('/v2/models/live').json['versions'] == []
        assert s.get('/v2/models/mnist/versions/2/ready').json == {
            'name': 'mnist', 'version': '2', 'ready': True}
        assert s.get('/v2/models/live/ready').json['ready'] is True
        for path, words in (('/v2/models/resnet', 'no model "resnet"'),
                            ('/v2/models/mnist/versions/3', 'no version "3"'),
                            ('/v2/models/mnist/versions/01x/ready', 'no version "01x"'),
                            ('/v2/models/live/versions/1', 'has no versions')):
            answer = s.get(path)
            assert answer.status == 404 and words in answer.json['error'], (path, answer)
            assert set(answer.json) == {'error'}


def test_a_batch_of_256_rows_answers_as_predict_batch(serve, models):
    _, nets = models
    X = pixels(ROWS)
    with serve() as s:
        answer = s.post('/v2/models/mnist/versions/1/infer', {**request(X), 'id': 'batch-7'})
        assert answer.status == 200, answer
        body = answer.json
        assert (body['model_name'], body['model_version'], body['id']) == ('mnist', '1',
                                                                          'batch-7')
        got = outputs(body)
        assert got.shape == (ROWS, 10)
        labels, expected = nets[1].predict_batch(X)
        np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)
        np.testing.assert_array_equal(got.argmax(1), labels)
        # No version: the best (v2); nested rows read as the flat ones.
        nested = {'inputs': [{**request(X[:5])['inputs'][0], 'data': X[:5].tolist()}]}
        best = s.post('/v2/models/mnist/infer', nested).json
        assert best['model_version'] == '2'
        np.testing.assert_allclose(outputs(best), nets[2].predict_batch(X[:5])[1], rtol=1e-6,
                                   atol=1e-7)
        # The live net (a copy of the best at start), counted by model in /metrics.
        live = s.post('/v2/models/live/infer', request(X[:3])).json
        np.testing.assert_allclose(outputs(live), nets[2].predict_batch(X[:3])[1], rtol=1e-6,
                                   atol=1e-7)
        families = {f.name: f for f in text_string_to_metric_families(
            s.get('/metrics').body.decode())}
        counted = {sample.labels['model']: sample.value
                   for sample in families['btf_predictions'].samples
                   if sample.name == 'btf_predictions_total'}
        assert counted == {'v1': ROWS, 'v2': 5, 'live': 3}


@pytest.mark.parametrize('change, words', [
    ({'datatype': 'FP64'}, 'datatype must be "FP32", got "FP64"'),
    ({'datatype': 'INT8'}, 'datatype must be "FP32", got "INT8"'),
    ({'shape': [2, 783]}, 'shape must be [n, 784]'),
    ({'shape': [1568]}, 'shape must be [n, 784]'),
    ({'shape': [0, 784]}, 'shape must be [n, 784]'),
    ({'shape': [10_001, 784]}, 'with n from 1 to 10000, got [10001, 784]'),
    ({'shape': [3, 784]}, 'must hold 3 x 784 = 2352 numbers'),
    ({'name': 'pixels'}, 'must be named "input", got "pixels"'),
    ({'data': ['a'] * 1568}, 'must hold only numbers'),
    ({'data': [[0.5] * 784, [0.5] * 783]}, 'must hold only numbers'),
    ({'data': [0.5] * 1567 + [None]}, 'must hold only numbers'),  # null is not a number
    ({'data': ['0.5'] * 1568}, 'must hold only numbers'),  # nor are numbers as strings
    ({'data': [True, False] * 784}, 'must hold only numbers'),
    ({'parameters': {'binary_data_size': '12'}}, 'binary_data_size must be'),
    ({'data': [0.5] * 1566 + [-0.25, 1.5]}, '2 are not, e.g. [1, 782] = -0.25, [1, 783] = 1.5'),
])
def test_bad_tensors_are_400_saying_what_is_wrong(serve, change, words):
    X = np.full((2, 784), 0.5, np.float32)
    with serve() as s:
        body = request(X)
        body['inputs'][0].update(change)
        answer = s.post('/v2/models/mnist/infer', body)
        assert answer.status == 400, answer
        assert words in answer.json['error'] and set(answer.json) == {'error'}


def test_parameters_and_headers_are_what_they_say(serve):
    """Found by the second attack: "binary_data_output": "no" meant yes, a Unicode digit in
    Inference-Header-Content-Length was a 500, and 16 MiB of [] parsed for seconds."""
    X = np.full((2, 784), 0.5, np.float32)
    with serve() as s:
        for where, parameters in (('request', {'binary_data_output': 'no'}),
                                  ('output', {'binary_data': 1})):
            body = request(X)
            if where == 'request':
                body['parameters'] = parameters
            else:
                body['outputs'] = [{'name': 'confidences', 'parameters': parameters}]
            answer = s.post('/v2/models/mnist/infer', body)
            assert answer.status == 400 and 'must be true or false' in answer.json['error']
        for length in ('\u00b2', '9' * 5000, '-1', '1e3'):
            answer = s.post('/v2/models/mnist/infer', request(X),
                            headers={'Inference-Header-Content-Length': length})
            assert answer.status == 400 and 'Inference-Header-Content-Length' in \
                answer.json['error'], (length, answer)
        lists = b'{"inputs":[' + b'[],' * 2_000_000 + b'[]]}'
        started = time.perf_counter()
        answer = s.post('/v2/models/mnist/infer', lists)
        assert answer.status == 400 and 'lists and objects' in answer.json['error']
        assert time.perf_counter() - started < 1


def test_blank_and_unlike_inputs_are_judged_as_predict_judges_them(serve):
    """An all-zero input reads as some digit with high confidence; /v2 says, per row, what
    /predict says ("unsure"), in the JSON and in binary, and only what is asked for."""
    X = np.zeros((3, 784), np.float32)
    X[1] = imaging.prepare(DIGIT).reshape(-1)  # a real drawn digit
    X[2, :28] = 1.0  # one line across the top: unlike any digit
    with serve() as s:
        answer = s.post('/v2/models/live/infer', request(X))
        assert answer.status == 200
        confidences, unsure = answer.json['outputs']
        assert unsure == {'name': 'unsure', 'datatype': 'BYTES', 'shape': [3],
                          'data': unsure['data']}
        expected = [insight.unsure(x, c) or '' for x, c in
                    zip(X, outputs(answer.json).max(axis=1))]
        assert unsure['data'] == expected and expected[0] == BLANK and expected[2]
        assert s.post('/predict', {'image': DIGIT}).json['unsure'] in (None, expected[1])
        only = s.post('/v2/models/live/infer', {**request(X), 'outputs': [{'name': 'unsure'}]})
        assert [o['name'] for o in only.json['outputs']] == ['unsure']
        twice = s.post('/v2/models/live/infer', {**request(X), 'outputs': [
            {'name': 'unsure'}, {'name': 'unsure'}]})
        assert twice.status == 400 and 'each once' in twice.json['error']
        for asked in ([{'name': {}}], [{'name': ['unsure']}], [{}], []):
            odd = s.post('/v2/models/live/infer', {**request(X), 'outputs': asked})
            assert odd.status == 400 and 'outputs may ask for' in odd.json['error'], asked


def test_bad_bodies_and_the_size_limit(serve):
    X = np.full((2, 784), 0.5, np.float32)
    with serve(max_body=200_000) as s:
        nan = json.dumps(request(X)).replace('0.5', 'NaN', 1)  # not JSON
        answer = s.post('/v2/models/mnist/infer', nan)
        assert answer.status == 400 and 'not JSON' in answer.json['error']
        for body in ({'input': []}, [1, 2], {'inputs': []},
                     {**request(X), 'outputs': [{'name': 'logits'}]}):
            answer = s.post('/v2/models/mnist/infer', body)
            assert answer.status == 400 and set(answer.json) == {'error'}, body
        body = json.dumps(request(pixels(ROWS))).encode()
        _, big = raw_request(s.port, b'POST /v2/models/mnist/infer HTTP/1.1\r\nHost: localhost'
                             b'\r\nContent-Type: application/json\r\nContent-Length: '
                             + str(len(body)).encode() + b'\r\n\r\n' + body[:1000])
        assert status_of(big) == 413 and 'limit of 200000 bytes' in body_of(big)['error']


def binary_request(X, header=None, size=None):
    head = json.dumps({'inputs': [{'name': 'input', 'datatype': 'FP32', 'shape': list(X.shape),
                                   'parameters': {'binary_data_size': size or X.nbytes}}],
                       'outputs': [{'name': 'confidences',
                                    'parameters': {'binary_data': True}}]}).encode()
    return head + X.astype('<f4').tobytes(), {
        'Inference-Header-Content-Length': str(header or len(head)),
        'Content-Type': 'application/octet-stream'}


def test_binary_data_extension_in_and_out(serve, models):
    _, nets = models
    X = pixels(4, seed=1)
    with serve() as s:
        body, headers = binary_request(X)
        answer = call(s.port, 'POST', '/v2/models/mnist/infer', body, headers)
        assert answer.status == 200
        length = int(answer.headers['Inference-Header-Content-Length'])
        head = json.loads(answer.body[:length])
        assert head['outputs'][0]['parameters'] == {'binary_data_size': 4 * 10 * 4}
        got = np.frombuffer(answer.body[length:], '<f4').reshape(4, 10)
        np.testing.assert_allclose(got, nets[2].predict_batch(X)[1], rtol=1e-6, atol=1e-7)
        X[2, 100] = np.nan
        body, headers = binary_request(X)
        answer = call(s.port, 'POST', '/v2/models/mnist/infer', body, headers)
        assert answer.status == 400 and '[2, 100] = nan' in answer.json['error']
        body, headers = binary_request(X, size=100)
        answer = call(s.port, 'POST', '/v2/models/mnist/infer', body, headers)
        assert answer.status == 400 and 'binary_data_size must be 12544' in answer.json['error']
        body, headers = binary_request(X, header=10 ** 9)
        answer = call(s.port, 'POST', '/v2/models/mnist/infer', body, headers)
        assert answer.status == 400 and 'Inference-Header-Content-Length' in answer.json['error']


def test_tritonclient_talks_to_the_server(serve, models):
    _, nets = models
    X = pixels(ROWS, seed=2)
    with serve() as s:
        client = triton.InferenceServerClient(url=f'127.0.0.1:{s.port}')
        try:
            assert client.is_server_live() and client.is_server_ready()
            assert client.is_model_ready('mnist', '1') and client.is_model_ready('live')
            assert client.get_server_metadata()['name'] == 'better-tensorflow'
            meta = client.get_model_metadata('mnist')
            assert [i['name'] for i in meta['inputs']] == ['input']
            for binary in (True, False):
                tensor = triton.InferInput('input', list(X.shape), 'FP32')
                tensor.set_data_from_numpy(X, binary_data=binary)
                wanted = [triton.InferRequestedOutput('confidences', binary_data=binary)]
                result = client.infer('mnist', [tensor], model_version='1', outputs=wanted)
                np.testing.assert_allclose(result.as_numpy('confidences'),
                                           nets[1].predict_batch(X)[1], rtol=1e-6, atol=1e-7)
            result = client.infer('live', [tensor])  # no outputs named: all, binary
            np.testing.assert_allclose(result.as_numpy('confidences'),
                                       nets[2].predict_batch(X)[1], rtol=1e-6, atol=1e-7)
            unsure = result.as_numpy('unsure')
            assert unsure.shape == (ROWS,) and all(isinstance(u, bytes) for u in unsure)
            blank = np.zeros((2, 784), np.float32)
            empty = triton.InferInput('input', [2, 784], 'FP32')
            for binary in (True, False):
                empty.set_data_from_numpy(blank, binary_data=binary)
                result = client.infer('live', [empty], outputs=[
                    triton.InferRequestedOutput('unsure', binary_data=binary)])
                got = [u if isinstance(u, str) else u.decode() for u in result.as_numpy('unsure')]
                assert got == [BLANK, BLANK], binary
            with pytest.raises(InferenceServerException) as unknown:
                client.infer('mnist', [tensor], model_version='9')
            assert 'no version "9"' in unknown.value.message()
            assert unknown.value.status() == '404'
            bad = X.copy()
            bad[0, 0] = np.inf
            tensor.set_data_from_numpy(bad)
            with pytest.raises(InferenceServerException) as refused:
                client.infer('mnist', [tensor])
            assert refused.value.status() == '400'
            assert '[0, 0] = inf' in refused.value.message()
            wrong = triton.InferInput('input', [1, 784], 'FP64')
            wrong.set_data_from_numpy(np.zeros((1, 784)))
            with pytest.raises(InferenceServerException) as datatype:
                client.infer('mnist', [wrong])
            assert 'FP32' in datatype.value.message()
        finally:
            client.close()


def test_the_largest_batch_in_binary(serve, models):
    """10,000 rows (the most a request may hold; 31 MB in FP32, so past the default body
    limit), read and computed in the decoding pool."""
    _, nets = models
    X = pixels(10_000, seed=3)
    head = json.dumps({'inputs': [{'name': 'input', 'datatype': 'FP32', 'shape': [10_000, 784],
                                   'parameters': {'binary_data_size': X.nbytes}}]}).encode()
    with serve(max_body=40 * 2 ** 20, max_buffered=80 * 2 ** 20) as s:
        answer = call(s.port, 'POST', '/v2/models/mnist/infer', head + X.tobytes(),
                      {'Inference-Header-Content-Length': str(len(head))})
        assert answer.status == 200
        got = outputs(answer.json)
    assert got.shape == (10_000, 10)
    np.testing.assert_array_equal(got.argmax(1), nets[2].predict_batch(X)[0])


def test_one_spelling_per_version_and_an_integer_binary_size(serve):
    """Issue #20, item 8: version "01" was echoed as "01", a version of 5,000 digits was a
    500 (int() refuses them), and binary_data_size 3136.0 was taken for 3136."""
    X = pixels(1)
    head = json.dumps({'inputs': [{'name': 'input', 'datatype': 'FP32', 'shape': [1, 784],
                                   'parameters': {'binary_data_size': 3136.0}}]}).encode()
    with serve() as s:
        assert s.get('/v2/models/mnist/versions/01').json['versions'] == ['1']
        assert s.get('/v2/models/mnist/versions/001/ready').json['version'] == '1'
        answer = s.post('/v2/models/mnist/versions/01/infer', request(X))
        assert answer.status == 200 and answer.json['model_version'] == '1', answer
        answer = s.get('/v2/models/mnist/versions/' + '9' * 5000)
        assert answer.status == 404 and 'no version' in answer.json['error'], answer
        answer = call(s.port, 'POST', '/v2/models/mnist/infer', head + X.tobytes(),
                      {'Inference-Header-Content-Length': str(len(head))})
        assert answer.status == 400 and 'binary_data_size must be 3136' in \
            answer.json['error'], answer


def test_json_rows_past_the_limit_point_to_binary_data(serve):
    with serve() as s:
        answer = s.post('/v2/models/mnist/infer', request(pixels(ROWS + 1)))
        assert answer.status == 400 and 'binary_data_size' in answer.json['error'], answer
