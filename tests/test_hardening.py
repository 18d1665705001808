"""Hostile input, access control, faults (SIGKILL) and scaling out, against real servers:
server.py in subprocesses (its real command line, killed for real) and apps in threads
sharing one state folder (two "workers" whose roles the test chooses)."""
import base64
import json
import random
import re
import struct
import time
import zlib
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np
import pytest

import better_tensorflow as btf
from service import Settings, create_app
from service.store import weights_digest
from tests.conftest import (
    DIGIT,
    Process,
    body_of,
    call,
    confidences,
    file_digest,
    listening_address,
    predict_locally,
    raw_request,
    read_events,
    status_of,
    tiny_data,
    wait_for,
    write_models,
)

TOKEN = 's3cret-token'


# ---------------------------------------------------------------------------------------
# The command line: loopback by default, the token from BTF_TOKEN, CORS origins, and
# request timeouts that also stop clients that trickle a byte at a time.

def test_command_line_binds_loopback_guards_and_times_out_slow_clients(tmp_path):
    with Process(tmp_path, '--models', str(tmp_path / 'models'), '--data', 'none.npz',
                 '--request-timeout', '1', '--cors-origins', 'http://a.example',
                 env={'BTF_TOKEN': TOKEN}) as s:
        assert listening_address(s.port) == '127.0.0.1'

        assert s.get('/reset').status == 401
        ok = s.get('/reset', headers={'Authorization': f'Bearer {TOKEN}'})
        assert ok.status == 200 and ok.body == b'OK'
        allowed = s.get('/models', headers={'Origin': 'http://a.example'})
        assert allowed.headers['Access-Control-Allow-Origin'] == 'http://a.example'
        refused = s.get('/models', headers={'Origin': 'http://b.example'})
        assert refused.status == 200 and 'Access-Control-Allow-Origin' not in refused.headers

        # A head trickling in at 0.05 s per byte would take 15 s: it is cut off after 1 s.
        head = b'GET /health HTTP/1.1\r\nHost: localhost\r\nX-Pad: ' + b'a' * 260 + b'\r\n\r\n'
        sent, answer = raw_request(s.port, b'', head)
        assert status_of(answer) == 408, answer
        assert body_of(answer) == {'error': 'the request did not arrive within 1.0 seconds.'}
        assert sent < len(head)
        # The same for a body, after a head that came at once.
        body = json.dumps({'image': DIGIT}).encode()[:300]
        head = b'POST /predict HTTP/1.1\r\nHost: localhost\r\nContent-Length: 300\r\n\r\n'
        sent, answer = raw_request(s.port, head, body)
        assert status_of(answer) == 408, answer
        assert body_of(answer) == {'error': 'the request did not arrive within 1.0 seconds.'}
        assert 0 < sent < len(body)
        # A client that stops sending mid-head gets the same.
        sent, answer = raw_request(s.port, b'GET /health HTTP/1.1\r\nHo')
        assert status_of(answer) == 408
        assert s.get('/health').status == 200


def test_token_guards_the_routes_that_change_the_live_net(serve_data, models):
    serve = serve_data
    _, nets = models
    bearer = {'Authorization': f'Bearer {TOKEN}'}
    with serve(token=TOKEN) as s:
        live = s.state / 'live.npz'
        before = file_digest(live)
        for method, path in (('GET', '/reset'), ('POST', '/reset'), ('GET', '/pretrain'),
                             ('POST', '/pretrain'), ('GET', '/train'), ('POST', '/train')):
            for headers, query, problem in (
                    ({}, '', 'no token was given'),
                    ({'Authorization': 'Bearer wrong'}, '', 'the token is wrong'),
                    ({'Authorization': f'Basic {TOKEN}'}, '', 'no token was given'),
                    ({}, '?token=wrong', 'the token is wrong'),
                    ({}, f'?token={TOKEN[:-1]}', 'the token is wrong'),
                    ({'Authorization': 'Bearer'}, '', 'the token is wrong')):
                answer = s.call(method, path + query, headers={
                    **headers, 'Origin': 'http://elsewhere.example'})
                assert answer.status == 401, (method, path, headers, query, answer)
                assert answer.json == {'error': f'{path} changes the live net and needs the '
                                                f"server's token ({problem}): send "
                                                '"Authorization: Bearer <token>" or add '
                                                '?token=<token>.'}
                assert answer.headers['WWW-Authenticate'] == 'Bearer realm="better-tensorflow"'
                assert answer.headers['Access-Control-Allow-Origin'] == '*'
        assert file_digest(live) == before
        assert s.get('/train/status').json['history'] == []

        # Reads and predictions stay open.
        for path in ('/health', '/models', '/train/status', '/model/hidden', '/openapi.json'):
            assert s.get(path).status == 200, path
        assert s.post('/predict', {'image': DIGIT}).status == 200

        # The right token, either way, changes the net.
        assert s.get('/reset', headers=bearer).body == b'OK'
        assert file_digest(live) != before
        assert s.post(f'/pretrain?token={TOKEN}').body == b'OK'
        np.testing.assert_allclose(confidences(s.post('/predict', {'image': DIGIT}).json),
                                   predict_locally(nets[2]), rtol=1e-5)
        trained = s.post('/train', {'epochs': 1}, headers=bearer)
        assert trained.status == 200 and trained.json['epochs'] == 1
        assert s.get(f'/train?epochs=1&token={TOKEN}').json['epochs'] == 2

        # A browser's preflight carries no token and may announce Authorization.
        preflight = s.call('OPTIONS', '/train', headers={
            'Origin': 'http://elsewhere.example', 'Access-Control-Request-Method': 'POST',
            'Access-Control-Request-Headers': 'authorization, content-type'})
        assert preflight.status == 204
        assert 'authorization' in preflight.headers['Access-Control-Allow-Headers'].lower()

        document = s.get('/openapi.json').json
    schemes = document['components']['securitySchemes']
    assert schemes['bearer'] == {'type': 'http', 'scheme': 'bearer',
                                 'description': schemes['bearer']['description']}
    assert (schemes['token']['in'], schemes['token']['name']) == ('query', 'token')
    guarded = {(path, method) for path, item in document['paths'].items()
               for method, operation in item.items() if 'security' in operation}
    changing = {(p, m) for p in ('/train', '/reset', '/pretrain') for m in ('get', 'post')}
    assert guarded == changing | {
        ('/samples', 'get'), ('/samples', 'post'), ('/samples/export', 'get'),
        ('/samples/{sample}/image', 'get'), ('/samples/{sample}', 'delete'), ('/metrics', 'get'),
        # the live net's by the token, a private net's by its name (test_nets.py)
        ('/nets', 'get'), ('/nets/{name}', 'delete'), ('/nets/{name}/rollback', 'post'),
        ('/nets/{name}/promote', 'post'), ('/samples/{sample}/share', 'post'),
        ('/samples/{sample}/review', 'post')}
    for path, method in guarded:
        operation = document['paths'][path][method]
        assert operation['security'] == [{'bearer': []}, {'token': []}]
        assert operation['responses']['401']['content']['application/json']['schema'] == \
            {'$ref': '#/components/schemas/Error'}


def test_without_a_token_nothing_is_guarded_or_documented_as_guarded(serve):
    with serve() as s:
        assert s.get('/reset', headers={'Authorization': 'Bearer anything'}).status == 200
        document = s.get('/openapi.json').json
    assert not [op for item in document['paths'].values() for op in item.values()
                if 'security' in op or '401' in op['responses']]


def test_allowed_origins_are_configurable(serve):
    allowed = ['http://good.example', 'https://also.example']
    with serve(cors_origins=allowed) as s:
        for origin in allowed:
            answer = s.get('/models', headers={'Origin': origin})
            assert answer.headers['Access-Control-Allow-Origin'] == origin
            assert 'Origin' in answer.headers['Vary']
        for origin in ('http://evil.example', 'http://good.example.evil.example', 'null'):
            answer = s.get('/models', headers={'Origin': origin})
            assert answer.status == 200
            assert 'Access-Control-Allow-Origin' not in answer.headers, origin
            preflight = s.call('OPTIONS', '/predict', headers={
                'Origin': origin, 'Access-Control-Request-Method': 'POST'})
            assert 'Access-Control-Allow-Origin' not in preflight.headers, origin
        preflight = s.call('OPTIONS', '/predict', headers={
            'Origin': allowed[0], 'Access-Control-Request-Method': 'POST'})
        assert preflight.status == 204
        assert preflight.headers['Access-Control-Allow-Origin'] == allowed[0]
    with pytest.raises(ValueError, match="cors_origins must be '\\*' or a list"):
        create_app(cors_origins='http://one.example')


# ---------------------------------------------------------------------------------------
# Hostile input: each gets a 4xx, nothing changes, and memory stays bounded.

def bomb_png(width=50_000, height=50_000):
    """A 70-byte PNG whose header declares width x height pixels (valid CRC): decoding it
    would allocate 7.5 GB for 50,000 x 50,000 grey pixels."""
    png = bytearray(cv2.imencode('.png', np.zeros((1, 1), np.uint8))[1].tobytes())
    ihdr = b'IHDR' + struct.pack('>II', width, height) + bytes(png[24:29])
    png[12:33] = ihdr + struct.pack('>I', zlib.crc32(ihdr))
    return bytes(png)


def bomb_jpeg():
    """A small JPEG whose frame header declares 65,535 x 65,535 pixels."""
    jpeg = bytearray(cv2.imencode('.jpg', np.zeros((8, 8), np.uint8))[1].tobytes())
    sof = jpeg.index(b'\xff\xc0')
    jpeg[sof + 5:sof + 9] = struct.pack('>HH', 65535, 65535)
    return bytes(jpeg)


def bomb_webp():
    """A WebP extended header declaring a 16,384 x 16,384 canvas."""
    chunk = b'VP8X' + struct.pack('<I', 10) + b'\x10\x00\x00\x00' + \
        (16383).to_bytes(3, 'little') * 2
    return b'RIFF' + struct.pack('<I', 4 + len(chunk)) + b'WEBP' + chunk


def bomb_bmp():
    """A BMP header declaring 50,000 x 50,000 pixels and no pixel data."""
    return b'BM' + struct.pack('<IHHI', 54, 0, 0, 54) + \
        struct.pack('<IiiHHIIiiII', 40, 50_000, 50_000, 1, 24, 0, 0, 0, 0, 0, 0)


def b64(data):
    return 'data:image/png;base64,' + base64.b64encode(data).decode()


def nested(depth, leaf=1):
    return '[' * depth + json.dumps(leaf) + ']' * depth


HOSTILE = [
    # Decompression bombs: refused from the header, before any pixel is decoded.
    ('POST', '/predict', {'image': b64(bomb_png())}, 413, '50000x50000 = 2500000000 pixels'),
    ('POST', '/predict', {'image': b64(bomb_jpeg())}, 413, '65535x65535'),
    ('POST', '/predict', {'image': b64(bomb_webp())}, 413, '16384x16384'),
    ('POST', '/predict', {'image': b64(bomb_bmp())}, 413, '50000x50000'),
    ('POST', '/predict', {'image': b64(bomb_png(16_777_217, 1))}, 413, '16777217x1'),
    ('POST', '/predict', {'image': b64(b'\xff\xd8' + b'\xff' * 500_000)}, 400, 'broken JPEG'),
    # Deeply nested JSON, at the top and inside fields.
    ('POST', '/predict', '[' * 100_000, 400, 'nested too deeply'),
    ('POST', '/predict', '{"image": ' * 50_000, 400, 'nested too deeply'),
    ('POST', '/train', '{"epochs": ' + nested(100_000) + '}', 400, 'nested too deeply'),
    ('POST', '/predict', '{"image": "x", "pretrained": ' + nested(900) + '}', 400,
     'pretrained must be one of [1, 2]'),
    ('POST', '/train', '{"epochs": ' + nested(900) + '}', 400, 'epochs must be an integer'),
    # A path where a model version is expected.
    ('POST', '/predict', {'image': DIGIT, 'pretrained': '../../etc/passwd'}, 400,
     'got "../../etc/passwd"'),
    ('POST', '/predict', {'image': DIGIT, 'pretrained': '/etc/passwd'}, 400, 'pretrained must'),
    ('POST', '/predict', {'image': DIGIT, 'pretrained': 'model-v1.npz'}, 400, 'pretrained must'),
    ('GET', '/model/hidden?pretrained=../../etc/passwd', None, 400, 'got "../../etc/passwd"'),
    ('GET', '/model/hidden?pretrained=%2e%2e%2fmodels.json', None, 400, 'pretrained must'),
    ('GET', '/static/../../../../etc/passwd', None, 404, 'nothing at'),
    # Floats, booleans and strings where integers are expected.
    *[('POST', '/train', f'{{"epochs": {v}}}', 400, 'epochs must be an integer from 1 to 100')
      for v in ('1.0', '1e0', '1.5', 'true', 'false', '"1"', '-0.0', '1e309', 'NaN',
                'Infinity', '-1', '[1]', '{"n": 1}', '1' * 4000)],
    ('POST', '/train', '{"epochs": ' + '1' * 5000 + '}', 400, 'the body is not valid JSON'),
    *[('GET', f'/train?epochs={v}', None, 400, 'epochs must be an integer from 1 to 100')
      for v in ('1.0', '1e0', 'true', '0x1', '%201', '+1', '%EF%BC%91', '1,2', '-0')],
    *[('POST', '/predict', f'{{"image": "x", "pretrained": {v}}}', 400, 'pretrained must')
      for v in ('1.0', 'true', 'false', '"1"', '1e0', '[1]', '2.5', 'NaN')],
    ('POST', '/predict', {'image': DIGIT, 'return_input': 1}, 400, 'return_input must be true'),
    ('POST', '/predict', {'image': DIGIT, 'return_input': 'false'}, 400, 'return_input must'),
]


def test_hostile_requests_get_a_4xx_change_nothing_and_memory_stays_bounded(
        tmp_path, data_file):
    state = tmp_path / 'state'
    folder = tmp_path / 'models'
    write_models(folder, {1: (784, 20, 10), 2: (784, 30, 10)}, best=2)
    with Process(tmp_path, '--models', str(folder), '--data', str(data_file)) as s:
        s.post('/predict', {'image': DIGIT})  # everything a prediction needs is allocated
        live, models, peak = file_digest(state / 'live.npz'), s.get('/models').json, \
            s.peak_memory()
        for _ in range(3):
            for method, path, body, status, message in HOSTILE:
                answer = call(s.port, method, path, body)
                assert answer.status == status, (method, path, str(body)[:80], answer)
                assert message in answer.json['error'], (str(body)[:80], answer)
            # A body announced as 1 GB is refused before it is read.
            _, answer = raw_request(
                s.port, b'POST /predict HTTP/1.1\r\nHost: localhost\r\n'
                        b'Content-Length: 1000000000\r\n'
                        b'Content-Type: application/json\r\n\r\n{"image": "')
            assert status_of(answer) == 413
            assert body_of(answer) == {'error': 'the request is larger than the limit of '
                                                f'{Settings().max_body} bytes.'}
        assert (file_digest(state / 'live.npz'), s.get('/models').json) == (live, models)
        assert s.get('/train/status').json['history'] == []
        growth = s.peak_memory() - peak
        assert growth < 100 * 2 ** 20, f'peak memory grew by {growth / 2 ** 20:.0f} MiB'
        assert s.post('/predict', {'image': DIGIT}).status == 200
        assert 'Traceback' not in s.output()


# ---------------------------------------------------------------------------------------
# Faults: SIGKILL in the middle of a training and of saves; a corrupt live file at start-up.

def pretrained_files_load(folder):
    for entry in json.loads((folder / 'models.json').read_text())['models']:
        path = folder / entry['file']
        assert file_digest(path) == entry['sha256']
        btf.Graph.from_file(path)


def test_sigkill_during_training_keeps_the_last_complete_net(tmp_path, data_file):
    state = tmp_path / 'state'
    folder = tmp_path / 'models'
    write_models(folder, {1: (784, 20, 10), 2: (784, 30, 10)}, best=2)
    args = ('--models', str(folder), '--data', str(data_file))
    with Process(tmp_path, *args) as s:
        assert s.get('/train?epochs=1').status == 200
        saved = file_digest(state / 'live.npz')
        models = s.get('/models').json
        training = ThreadPoolExecutor(1).submit(s.get, '/train?epochs=100')
        wait_for(lambda: s.get('/train/status').json['epoch'] >= 3, 'three epochs')
        s.kill()
        with pytest.raises(OSError):
            training.result(timeout=30)
    assert file_digest(state / 'live.npz') == saved
    assert btf.Graph.from_file(state / 'live.npz').epochs == 1
    pretrained_files_load(folder)
    stale = json.loads((state / 'train-status.json').read_text())
    assert stale['status']['running'] is True  # written by the killed job
    with Process(tmp_path, *args) as s:
        assert s.get('/models').json == models
        status = s.get('/train/status').json
        assert status['running'] is False and status['epochs'] == 100
        # The lock died with its process: training works again.
        again = s.get('/train?epochs=1')
        assert again.status == 200 and again.json['epochs'] == 2


def test_sigkill_during_saves_leaves_a_complete_net_every_time(tmp_path, data_file):
    """Kill the server while it trains 1-epoch jobs back to back (each ends with a save):
    at random moments, and as soon as a save's temporary file appears. Each restart finds a
    complete net: the last one answered, or the next one when its save completed but not
    its answer."""
    state = tmp_path / 'state'
    folder = tmp_path / 'models'
    write_models(folder, {2: (784, 30, 10)}, best=2)
    args = ('--models', str(folder), '--data', str(tiny_data(data_file, tmp_path)))
    rng = random.Random(0)
    answered, mid_save, left = 0, 0, []
    for kill in range(6):  # 3 at random moments, 3 as a save starts
        with Process(tmp_path, *args) as s:
            restored = s.get('/models').json['live']
            net = btf.Graph.from_file(state / 'live.npz')
            assert restored['epochs'] == net.epochs in (answered, answered + 1)
            meta = json.loads((state / 'live.json').read_text())
            if meta['digest'] == weights_digest(net):
                assert restored['validation_accuracy'] == meta['validation_accuracy']
            else:
                assert restored['validation_accuracy'] is None
            # The restart removed what the killed processes left (not what a live one writes).
            assert not [p for p in left if p.exists() and not btf.temporary_in_use(p)]
            answered = net.epochs

            def hammer():
                nonlocal answered
                while True:
                    answer = s.post('/train', {'epochs': 1}, timeout=30)
                    assert answer.status == 200, answer
                    answered = answer.json['epochs']

            ThreadPoolExecutor(1).submit(hammer)
            time.sleep(rng.uniform(0.3, 1.0))
            if kill % 2:  # try to catch a save in progress (it lasts milliseconds)
                deadline = time.monotonic() + 10
                while not list(state.glob('.live.npz.*.tmp')) and time.monotonic() < deadline:
                    time.sleep(0.001)
            s.kill()
        mid_save += bool(list(state.glob('.live.*.tmp')))
        left = list(state.rglob('.*.tmp'))
        pretrained_files_load(folder)
    print(f'{mid_save} of 6 kills left a save unfinished; {answered} epochs trained')


def test_corrupt_live_file_is_set_aside_not_overwritten(serve, models, caplog, tmp_path):
    state = tmp_path / 'state'
    state.mkdir()
    folder, nets = models
    for garbage in (b'broken', (folder / 'model-v2.npz').read_bytes()[:5000]):
        (state / 'live.npz').write_bytes(garbage)
        with serve() as s:
            got = s.post('/predict', {'image': DIGIT}).json
        np.testing.assert_allclose(confidences(got), predict_locally(nets[2]), rtol=1e-5)
        aside = sorted(state.glob('live.corrupt-*.npz'))
        assert [p.read_bytes() for p in aside][-1] == garbage
        assert btf.Graph.from_file(state / 'live.npz').sizes == (784, 30, 10)
        assert f'moved it to {aside[-1]}' in caplog.text
    assert len(aside) == 2
    # A live.json that describes another net gives no accuracy, not a wrong one.
    (state / 'live.json').write_text(json.dumps({'validation_accuracy': 0.99, 'digest': 'x'}))
    with serve() as s:
        assert s.get('/models').json['live']['validation_accuracy'] is None


# ---------------------------------------------------------------------------------------
# Scaling out: workers that share the models folder act as one service.

def test_two_workers_on_one_folder_act_as_one_service(serve_data, models, dataset):
    serve = serve_data
    """Two apps on one models folder, as two worker processes (or machines) would be: what
    one does, the other shows."""
    _, nets = models
    with serve() as a, serve() as b, ThreadPoolExecutor(4) as pool:
        state = a.state
        # A reset or pretrain on one is what the other answers with next.
        for change, other in ((a, b), (b, a)):
            assert change.get('/reset').body == b'OK'
            fresh = btf.Graph.from_file(state / 'live.npz')
            np.testing.assert_allclose(confidences(other.post('/predict', {'image': DIGIT}).json),
                                       predict_locally(fresh), rtol=1e-5)
            assert other.get('/pretrain').body == b'OK'
            np.testing.assert_allclose(confidences(change.post('/predict', {'image': DIGIT}).json),
                                       predict_locally(nets[2]), rtol=1e-5)

        # One training across both: b streams and reports a's job, and refuses another.
        events = pool.submit(read_events, b.port)
        wait_for(lambda: b.app.ctx.streams.queues, 'the event stream on b')
        training = pool.submit(a.post, '/train', {'epochs': 30})
        wait_for(lambda: b.get('/train/status').json['epoch'] >= 2, "a's job, seen from b")
        for s, method, path in ((b, 'POST', '/train'), (b, 'GET', '/reset'),
                                (b, 'POST', '/pretrain'), (a, 'GET', '/train')):
            busy = s.call(method, path)
            assert busy.status == 409, (path, busy)
            assert busy.json['status']['running'] is True and busy.json['status']['epochs'] == 30
        result = training.result(timeout=120).json
        streamed, _ = events.result(timeout=60)
        status = b.get('/train/status').json
        assert status == a.get('/train/status').json
        assert status['running'] is False and [h['epoch'] for h in status['history']] == \
            list(range(1, 31))
        names = [name for name, _ in streamed]
        assert names[0] == 'status' and names[-1] == 'done' and 'progress' in names
        view = ('view_samples', 'confusion', 'units')  # the large part: not in the history
        assert [{k: v for k, v in data.items() if k not in view}
                for name, data in streamed if name == 'epoch'] == \
            [{**h, 'epochs': 30} for h in status['history']]
        assert streamed[-1][1] == result
        # b answers with the trained net, and its accuracy, at once.
        trained = btf.Graph.from_file(state / 'live.npz')
        assert trained.epochs == result['epochs'] == 30
        assert b.get('/models').json['live']['validation_accuracy'] == \
            result['validation_accuracy'] == \
            pytest.approx(trained.evaluate(*dataset['val']), abs=5e-5)
        np.testing.assert_allclose(confidences(b.post('/predict', {'image': DIGIT}).json),
                                   predict_locally(trained), rtol=1e-5)
        # And b trains on from a's net.
        assert b.get('/train?epochs=1').json['epochs'] == 31


def test_a_prediction_checks_the_stores_version_once_and_still_sees_every_change(serve,
                                                                                 models):
    """A request looks at the store's version of its net once (the folder store: two stats),
    not twice; the first answer after another worker's change still comes from the new net."""
    import sys
    _, nets = models
    with serve() as a, serve() as b:
        store, checks = b.app.ctx.store, []
        version = store.net_version

        def counted(name):
            if sys._getframe(3).f_code.co_name == 'get':  # behind <- sync <- Registry.get
                checks.append(name)
            return version(name)
        store.net_version = counted
        for _ in range(5):
            assert b.post('/predict', {'image': DIGIT}).status == 200
        assert checks == ['live'] * 5  # the old code: two checks a request
        for change in ('/reset', '/pretrain', '/reset'):
            assert a.get(change).body == b'OK'
            new = btf.Graph.from_file(a.state / 'live.npz')
            np.testing.assert_allclose(confidences(b.post('/predict', {'image': DIGIT}).json),
                                       predict_locally(new), rtol=1e-5)
        assert a.post('/nets/live/rollback', {'version': 3}).status == 200  # the pretrain's
        np.testing.assert_allclose(confidences(b.post('/predict', {'image': DIGIT}).json),
                                   predict_locally(nets[2]), rtol=1e-5)


def test_a_killed_workers_training_ends_every_event_stream(serve_data, models, data_file,
                                                          tmp_path):
    serve, state = serve_data, tmp_path / 'state'
    """Worker a (a process) trains while b (in this process) streams a's job. a is killed:
    b's stream ends with an error, b's status stops running, and b may train at once."""
    folder, _ = models
    with ThreadPoolExecutor(2) as pool, serve() as b:  # b's stop ends the stream's thread
        a = Process(tmp_path, '--models', str(folder), '--data', str(data_file))
        try:
            events = pool.submit(read_events, b.port)
            wait_for(lambda: b.app.ctx.streams.queues, 'the event stream on b')
            pool.submit(a.get, '/train?epochs=100')  # cut off by the kill
            wait_for(lambda: b.get('/train/status').json['epoch'] >= 2, "a's job, seen from b")
            a.kill()
            streamed, _ = events.result(timeout=30)
        finally:
            a.stop()
        names = [name for name, _ in streamed]
        assert names[0] == 'status' and 'epoch' in names and names[-1] == 'done', names
        assert 'server process running it ended' in streamed[-1][1]['error']
        assert b.get('/train/status').json['running'] is False
        assert btf.Graph.from_file(state / 'live.npz').epochs == 0  # a never finished
        trained = b.get('/train?epochs=1')
        assert trained.status == 200 and trained.json['epochs'] == 1


def test_server_workers_answer_with_the_new_net_after_every_change(tmp_path, data_file):
    state = tmp_path / 'state'
    folder = tmp_path / 'models'
    nets = write_models(folder, {1: (784, 20, 10), 2: (784, 30, 10)}, best=2)
    with Process(tmp_path, '--models', str(folder), '--data', str(data_file),
                 '--workers', '2') as s, ThreadPoolExecutor(8) as pool:
        def everyone_predicts(net, n=48):
            """n predictions, each on a new connection (so both workers answer some)."""
            answers = pool.map(lambda _: s.post('/predict', {'image': DIGIT}), range(n))
            for answer in answers:
                np.testing.assert_allclose(confidences(answer.json), predict_locally(net),
                                           rtol=1e-5)

        everyone_predicts(nets[2])
        for path in ('/reset', '/pretrain', '/train?epochs=2', '/reset', '/train'):
            answer = s.get(path)
            assert answer.status == 200, (path, answer)
            live = btf.Graph.from_file(state / 'live.npz')
            everyone_predicts(live)
            described = set(pool.map(lambda _: json.dumps(s.get('/models').json['live']),
                                     range(16)))
            assert len(described) == 1 and json.loads(described.pop())['epochs'] == live.epochs

        # One training at a time across the workers.
        training = pool.submit(s.get, '/train?epochs=100')
        wait_for(lambda: s.get('/train/status').json['epoch'] >= 2, 'the training to run')
        busy = list(pool.map(lambda path: s.get(path), ['/train', '/reset', '/pretrain'] * 6))
        assert [answer.status for answer in busy] == [409] * 18
        assert {answer.json['status']['epochs'] for answer in busy} == {100}
        s.stop()  # the job stops after its current batch, and the net stays as it was
        assert training.result(timeout=60).status == 503
        assert btf.Graph.from_file(state / 'live.npz').epochs == live.epochs
    output = s.output()
    workers = set(re.findall(r' (\d+) INFO Worker ready', output))
    reloaded = set(re.findall(r' (\d+) INFO reloaded the live net saved by another', output))
    # Whichever worker made a change, the other one reloaded it (the kernel may hand every
    # changing request to the same worker, so only that other one need show it).
    assert len(workers) == 2 and reloaded and reloaded <= workers, output[-3000:]


def test_second_attack_small_holes(serve):
    """The second outside attack's small findings: a 404 or 405 quoted the whole path (8 KB)
    and method (7 KB); two Host headers passed on the first; the drawing as submitted was
    served inline without nosniff; HEAD /health was 405 (load balancers check with HEAD)."""
    with serve() as s:
        long_path = '/samples/' + '9' * 5000 + '/image'
        for answer in (s.get(long_path), s.get('/x' * 3000), s.call('Q' * 3000, '/health')):
            assert answer.status in (404, 405) and len(answer.json['error']) < 200, answer
        for head in (b'Host: 127.0.0.1\r\nHost: evil.example\r\n',
                     b'Host: 127.0.0.1\r\nHost: 127.0.0.1\r\n'):
            _, answer = raw_request(s.port, b'GET /models HTTP/1.1\r\n' + head +
                                    b'Connection: close\r\n\r\n')
            assert status_of(answer) == 400 and 'one Host header' in body_of(answer)['error']
        for path in ('/health', '/health/live', '/health/ready', '/'):
            answer = s.call('HEAD', path)
            assert answer.status == 200 and answer.body == b'', (path, answer)
        assert s.post('/samples', {'image': DIGIT, 'label': 3}).status == 201
        original = s.get('/samples/1/image?original=1')
        assert original.status == 200
        assert original.headers['X-Content-Type-Options'] == 'nosniff'
        assert original.headers['Content-Disposition'].startswith('attachment')
        assert s.get('/samples?offset=999999999').status == 200


def test_a_client_that_reads_nothing_is_cut_off_after_the_write_timeout(serve):
    """An answer's writes wait for the client (the write timer is armed only when the
    transport's buffer is full): a client that reads nothing of a 6 MB export is cut off
    after --write-timeout, one that reads gets all of it, and the server serves on."""
    import socket
    with serve(write_timeout=1.0) as s:
        made = s.post('/nets', {'from': 'fresh', 'sizes': [784, 2048, 10]})
        assert made.status == 201, made
        name = made.json['net']
        path = f'/nets/{name}/export?format=npz'
        whole = s.get(path)
        assert whole.status == 200 and len(whole.body) > 6_000_000
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(('127.0.0.1', s.port))
        sock.sendall(f'GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n'.encode())
        time.sleep(5)  # five times the timeout, reading nothing
        received = 0
        sock.settimeout(30)
        try:
            while chunk := sock.recv(1 << 20):
                received += len(chunk)
        except ConnectionResetError:
            pass
        finally:
            sock.close()
        assert received < len(whole.body) / 2
        assert s.get('/health').status == 200
