"""Black-box attacks on `python server.py` (its real command line, in subprocesses): unread
answers, huge uploads, cross-site requests and DNS rebinding, event-stream and connection
floods, secrets in the log, static-file tricks, SIGKILL of the main process, hostile start-up
state and a full disk. Each test states the behaviour expected of a hardened server."""
import contextlib
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from tests import conftest
from tests.conftest import (
    DIGIT,
    ROOT,
    Process,
    call,
    free_port,
    latency_ok,
    median_latency,
    tiny_data,
    wait_for,
    write_models,
)
from tests.test_hardening import body_of, listening_address, raw_request, status_of

TOKEN = 'attack-T0ken-4f9c2e'
MB = 2 ** 20


def state_args(tmp):
    return ['--state', str(tmp / 'state')]


def server_args(tmp, folder=None):
    """``--models`` (a temporary copy unless given: today's server writes its live net there)
    and the state arguments."""
    if folder is None:
        folder = tmp / 'models'
        if not (folder / 'models.json').exists():
            write_models(folder, {1: (784, 20, 10), 2: (784, 30, 10)}, best=2)
    return ['--models', str(folder), *state_args(tmp)]


def state_dir(tmp, models_dir):
    """Where live.npz lives."""
    return tmp / 'state'


def descendants(pid):
    """pid and every process below it (via /proc/<pid>/task/*/children)."""
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        for children in Path(f'/proc/{p}/task').glob('*/children'):
            try:
                todo += [int(c) for c in children.read_text().split()]
            except OSError:
                pass
    return found


def rss(process):
    """Resident memory (bytes) of the server and all its child processes."""
    total = 0
    for pid in descendants(process.process.pid):
        try:
            status = Path(f'/proc/{pid}/status').read_text()
        except OSError:
            continue
        match = re.search(r'VmRSS:\s+(\d+) kB', status)
        total += int(match.group(1)) * 1024 if match else 0
    return total


def is_json_error(answer):
    try:
        return isinstance(answer.json.get('error'), str)
    except (ValueError, AttributeError):
        return False


def p50_predict(port, until, body=None, minimum=5):
    """Median seconds of /predict calls made one after another until ``until()``."""
    body = body or {'image': DIGIT}
    times = []
    while not until() or len(times) < minimum:
        start = time.perf_counter()
        answer = call(port, 'POST', '/predict', body, timeout=60)
        times.append(time.perf_counter() - start)
        assert answer.status == 200, answer
    return statistics.median(times), len(times)


def timed_get(port, path, **kw):
    start = time.perf_counter()
    answer = call(port, 'GET', path, **kw)
    return answer, time.perf_counter() - start


def big_models(tmp):
    """A models folder: v1 784-30-10 (the live net's copy) and v2 784-800-10."""
    folder = tmp / 'models'
    write_models(folder, {1: (784, 30, 10), 2: (784, 800, 10)}, best=1)
    return folder


# ---------------------------------------------------------------------------------------
# 3. /model/hidden requested and never read.

def hidden_request(pipelined=1):
    return b'GET /model/hidden?pretrained=2 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n' * pipelined


@pytest.mark.parametrize('connections, pipelined, limit', [(200, 1, 150), (100, 5, 250)])
def test_unread_hidden_answers_do_not_pile_up_in_memory(tmp_path, connections, pipelined,
                                                        limit):
    with Process(tmp_path, *server_args(tmp_path, big_models(tmp_path))) as s:
        s.get('/model/hidden?pretrained=2')  # warm up
        before, socks = rss(s), []
        try:
            for i in range(connections):
                sock = socket.create_connection(('127.0.0.1', s.port), timeout=10)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                sock.sendall(hidden_request(pipelined))
                socks.append(sock)
                if i % 20 == 19:  # stop early rather than eat the machine's memory
                    time.sleep(0.5)
                    growth = (rss(s) - before) / MB
                    assert growth < limit, f'{growth:.0f} MB after {i + 1} connections'
            time.sleep(3)
            growth = (rss(s) - before) / MB
            assert growth < limit, f'{growth:.0f} MB with {connections} unread connections'
            assert s.get('/health', timeout=5).status == 200
        finally:
            for sock in socks:
                sock.close()


READERS = """
import http.client, sys, threading
def read():
    while True:
        conn = http.client.HTTPConnection('127.0.0.1', int(sys.argv[1]), timeout=60)
        conn.request('GET', sys.argv[2])
        conn.getresponse().read()
        conn.close()
for _ in range(32):
    threading.Thread(target=read, daemon=True).start()
threading.Event().wait()
"""


def p50_beside_readers(port, path, seconds=4):
    """/predict's median while 32 readers (a process of their own) read ``path`` again and
    again."""
    readers = subprocess.Popen([sys.executable, '-c', READERS, str(port), path])
    try:
        time.sleep(1.5)
        assert readers.poll() is None
        started = time.monotonic()
        return p50_predict(port, lambda: time.monotonic() - started > seconds,
                           {'image': DIGIT, 'pretrained': 2})
    finally:
        readers.kill()
        readers.wait(30)


def test_hidden_readers_do_not_slow_predictions(tmp_path):
    """32 readers of the 4.7 MB /model/hidden slow /predict no more than 32 readers of the
    tiny /models do (the baseline, measured in the same test: the same load of connections
    and processes on the same machine)."""
    with Process(tmp_path, *server_args(tmp_path, big_models(tmp_path))) as s:
        baseline, _ = p50_beside_readers(s.port, '/models')
        p50, n = p50_beside_readers(s.port, '/model/hidden?pretrained=2')
        assert latency_ok(p50, baseline), \
            f'/predict p50 {p50 * 1000:.0f} ms over {n} calls (beside /models readers: ' \
            f'{baseline * 1000:.0f} ms)'


# ---------------------------------------------------------------------------------------
# 4. Huge uploads.

def test_many_16mb_uploads_are_bounded(tmp_path):
    size = 16 * MB
    body = memoryview(b' ' * (size - 1) + b'x')  # invalid JSON: a 400 once read whole
    with Process(tmp_path, *server_args(tmp_path)) as s:
        before, baseline = rss(s), median_latency(s.port)
        head = (f'POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json'
                f'\r\nContent-Length: {size}\r\n\r\n').encode()
        socks = [socket.create_connection(('127.0.0.1', s.port), timeout=10)
                 for _ in range(40)]
        sent = [0] * len(socks)

        def send(i, upto, timeout):
            """Send the body up to ``upto`` bytes; a refusal or a delay is allowed."""
            sock = socks[i]
            sock.settimeout(timeout)
            try:
                if sent[i] == 0:
                    sock.sendall(head)
                while sent[i] < upto:
                    sent[i] += sock.send(body[sent[i]:min(upto, sent[i] + MB)])
            except OSError:
                pass

        def answer(i):
            send(i, size, 60)
            data = b''
            try:
                while b'\r\n\r\n' not in data or not data.rstrip().endswith(b'}'):
                    chunk = socks[i].recv(65536)
                    if not chunk:
                        break
                    data += chunk
            except OSError:
                pass
            return data

        try:
            with ThreadPoolExecutor(40) as pool:  # all but the last byte of each body
                list(pool.map(lambda i: send(i, size - 1, 10), range(len(socks))))
            time.sleep(1)
            growth = (rss(s) - before) / MB
            seconds = median_latency(s.port, calls=5)
            with ThreadPoolExecutor(40) as pool:
                answers = list(pool.map(answer, range(len(socks))))
        finally:
            for sock in socks:
                sock.close()
        assert latency_ok(seconds, baseline), f'/health {seconds:.3f} s, before {baseline:.3f} s'
        assert growth < 400, f'RSS grew by {growth:.0f} MB with 40 uploads of 16 MiB'
        for data in answers:
            assert status_of(data) in (400, 503), data[:300]
            if status_of(data) == 503:
                assert b'retry-after:' in data.lower() and 'error' in body_of(data)
        assert s.process.poll() is None and s.get('/health').status == 200


@pytest.mark.parametrize('how', ['hang up', 'stay silent', 'chunked, hang up'])
def test_bodies_declared_but_not_sent_hold_no_budget(tmp_path, how):
    """Four clients declare 16 MiB bodies (the whole 64 MiB body budget of a worker) and
    hang up, or send nothing: the budget is charged for bytes that arrive and given back when
    a connection ends, so /predict answers at once (it was 503 for minutes, until Python's
    cycle collector happened to free the dropped requests)."""
    with Process(tmp_path, *server_args(tmp_path)) as s:
        heads = []
        for _ in range(12):
            sock = socket.create_connection(('127.0.0.1', s.port), timeout=10)
            length = ('Transfer-Encoding: chunked' if how.startswith('chunked')
                      else f'Content-Length: {16 * MB}')
            sock.sendall(f'POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: '
                         f'application/json\r\n{length}\r\n\r\n'.encode())
            if how.startswith('chunked'):
                sock.sendall(b'10\r\n' + b' ' * 16 + b'\r\n')
            heads.append(sock)
        try:
            if 'hang up' in how:
                for sock in heads:
                    sock.close()
            time.sleep(0.3)
            for _ in range(3):
                answer = s.post('/predict', {'image': DIGIT})
                assert answer.status == 200, answer
        finally:
            for sock in heads:
                sock.close()


def test_unread_exports_are_built_a_few_at_a_time(tmp_path):
    """60 clients ask for /samples/export and read nothing: each export used to be read from
    the store and built before waiting for its turn to be written, all 60 in memory at once
    (100 clients, 6,300 samples: +830 MB). Now at most --max-large-answers are built."""
    from service.samples import SQLiteSampleStore
    (tmp_path / 'state').mkdir()
    store = SQLiteSampleStore(tmp_path / 'state' / 'samples.sqlite3', 100_000)
    rng = np.random.default_rng(0)
    for k in range(4000):
        store.add(k.to_bytes(4, 'big'), rng.integers(0, 256, 784, np.uint8), k % 10, 0, 'live')
    store.close()
    with Process(tmp_path, *server_args(tmp_path)) as s:
        assert s.get('/samples?limit=1').json['total'] == 4000
        before = rss(s)
        socks = []
        try:
            for _ in range(60):
                sock = socket.socket()
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a slow reader
                sock.connect(('127.0.0.1', s.port))
                socks.append(sock)
            for sock in socks:
                sock.sendall(b'GET /samples/export HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n')
            growth = 0
            for _ in range(16):  # the peak over 8 s
                time.sleep(0.5)
                growth = max(growth, (rss(s) - before) / MB)
            assert s.get('/health').status == 200
        finally:
            for sock in socks:
                sock.close()
        assert growth < 120, f'RSS grew by {growth:.0f} MB with 60 unread exports'


def post_16mb_beside_health(s, body):
    """(the answer, its seconds, /health's seconds while the body is being parsed)."""
    result = {}

    def send():
        start = time.perf_counter()
        result['answer'] = s.post('/predict', body, headers={'Content-Type': 'application/json'})
        result['seconds'] = time.perf_counter() - start

    thread = threading.Thread(target=send)
    thread.start()
    time.sleep(0.15)  # the body is on its way (16 MiB over loopback)
    health, seconds = timed_get(s.port, '/health', timeout=30)
    thread.join(60)
    assert health.status == 200
    return result['answer'], result['seconds'], seconds


def test_16mb_of_empty_lists_is_a_quick_short_400(tmp_path):
    """Compared with a body of the same size refused without any parsing (the baseline, in
    the same test): as quick, and /health not held up."""
    body = b'[' + b'[],' * ((16 * MB - 3) // 3) + b'[]]'
    assert len(body) <= 16 * MB
    control = b' ' * (len(body) - 1) + b'x'  # invalid JSON at its last byte
    with Process(tmp_path, *server_args(tmp_path)) as s:
        base_answer, base_seconds, base_health = post_16mb_beside_health(s, control)
        assert base_answer.status == 400
        answer, seconds, health = post_16mb_beside_health(s, body)
        assert latency_ok(health, base_health), f'/health took {health:.2f} s ' \
            f'(beside the control: {base_health:.2f} s)'
        assert answer.status == 400 and latency_ok(seconds, base_seconds, factor=2), \
            (answer, seconds, base_seconds)
        assert len(answer.json['error']) < 500


# ---------------------------------------------------------------------------------------
# 6. Cross-site requests, wrong content types and DNS rebinding (no token configured).

CHANGING = [(m, r) for r in ('/train', '/reset', '/pretrain') for m in ('GET', 'POST')]


def live_state(s):
    return s.get('/models').json['live'], s.get('/train/status').json['history']


def check(failures, answer, expected, what):
    ok = answer.status == expected and (expected < 400 or is_json_error(answer))
    if not ok:
        failures.append(f'{what}: {answer.status} {answer.body[:120]!r}, expected {expected}')


def test_cross_site_requests_cannot_change_the_live_net(tmp_path, models, data_file):
    folder, _ = models
    data = tiny_data(data_file, tmp_path)
    failures = []
    with Process(tmp_path, '--data', str(data), *server_args(tmp_path, folder)) as s:
        own = f'http://127.0.0.1:{s.port}'
        before = live_state(s)
        assert before[1] == []
        for method, route in CHANGING:
            for headers in ({'Sec-Fetch-Site': 'cross-site'}, {'Origin': 'https://evil.example'},
                            {'Origin': 'https://evil.example', 'Sec-Fetch-Site': 'cross-site'}):
                answer = call(s.port, method, route, headers=headers)
                check(failures, answer, 403, f'{method} {route} {headers}')
        answer = s.post('/train', '{"epochs":1}', headers={'Content-Type': 'text/plain'})
        check(failures, answer, 415, 'POST /train as text/plain')
        for host in ('evil.example', f'evil.example:{s.port}'):
            for method, route in [('GET', '/health'), ('GET', '/models'), *CHANGING]:
                answer = call(s.port, method, route, headers={'Host': host})
                check(failures, answer, 403, f'{method} {route} Host: {host}')
        after = live_state(s)
        if after != before:
            failures.append(f'the live net changed: {before} -> {after}')
        # What must still work.
        for headers in ({}, {'Sec-Fetch-Site': 'same-origin'}, {'Sec-Fetch-Site': 'none'},
                        {'Origin': own}, {'Host': f'localhost:{s.port}'},
                        {'Host': f'127.0.0.1:{s.port}'}):
            for method, route in (('GET', '/reset'), ('POST', '/pretrain')):
                check(failures, call(s.port, method, route, headers=headers), 200,
                      f'{method} {route} {headers}')
        check(failures, s.post('/train', {'epochs': 1}, headers={'Origin': own}), 200,
              'same-origin POST /train')
        for answer, what in ((s.post('/predict', {'image': DIGIT},
                                     headers={'Origin': 'https://evil.example'}), '/predict'),
                             (s.get('/models', headers={'Origin': 'https://evil.example'}),
                              '/models')):
            check(failures, answer, 200, f'{what} from evil.example')
            if 'Access-Control-Allow-Origin' not in answer.headers:
                failures.append(f'{what} from evil.example has no CORS header')
    assert not failures, '\n'.join(failures)


def test_cross_site_with_configured_cors_origins(tmp_path, models, data_file):
    folder, _ = models
    failures = []
    with Process(tmp_path, '--cors-origins', 'https://good.example', '--data',
                 str(tiny_data(data_file, tmp_path)), *server_args(tmp_path, folder)) as s:
        before = live_state(s)
        for method, route in CHANGING:
            check(failures, call(s.port, method, route,
                                 headers={'Origin': 'https://evil.example'}), 403,
                  f'{method} {route} from evil.example')
        if live_state(s) != before:
            failures.append('the live net changed')
        for method, route in (('GET', '/reset'), ('POST', '/pretrain')):
            check(failures, call(s.port, method, route,
                                 headers={'Origin': 'https://good.example'}), 200,
                  f'{method} {route} from good.example')
    assert not failures, '\n'.join(failures)


REBOUND = [('GET', '/samples/export'), ('GET', '/samples/1/image?original=1'),
           ('GET', '/samples'), ('POST', '/reset'), ('POST', '/pretrain'), ('GET', '/models'),
           ('POST', '/predict')]


def container_command(tmp, data):
    """The Dockerfile's command line, with this test's port, state and data."""
    from tests.test_operations import dockerfile
    words = json.loads(dockerfile()['CMD'][-1])
    values = {'--state': str(tmp / 'state'), '--data': str(data)}
    out = []
    for flag, value in zip(words[::2], words[1::2]):
        if flag != '--port':
            out += [flag, values.get(flag, value)]
    return out


def rebound(port, method, path, name='evil.example'):
    """A request as a DNS-rebinding page sends it: its own name as the Host, a matching
    Origin, and the browser's same-origin mark."""
    host = f'{name}:{port}'
    body = {'image': DIGIT} if path == '/predict' else None
    return call(port, method, path, body, headers={
        'Host': host, 'Origin': f'http://{host}', 'Sec-Fetch-Site': 'same-origin'})


def test_dns_rebinding_reaches_nothing_in_the_shipped_container(tmp_path, models, data_file):
    """The container's command (every interface, no token): a rebinding page's requests get
    403, while localhost, an IP address and a name listed in BTF_ALLOWED_HOSTS work."""
    folder, _ = models
    args = container_command(tmp_path, tiny_data(data_file, tmp_path))
    assert ['--host', '0.0.0.0'] == args[:2]
    failures = []
    with Process(tmp_path, *args, '--models', str(folder),
                 env={'BTF_ALLOWED_HOSTS': 'digits.example'}) as s:
        assert s.post('/samples', {'image': DIGIT, 'label': 4}).status == 201
        before = live_state(s)
        for method, path in REBOUND:
            check(failures, rebound(s.port, method, path), 403, f'rebound {method} {path}')
        if live_state(s) != before:
            failures.append(f'the live net changed: {before} -> {live_state(s)}')
        for name in ('127.0.0.1', 'localhost', '192.0.2.7', '[::1]', 'digits.example'):
            for method, path in (('GET', '/samples/1/image?original=1'), ('POST', '/reset')):
                check(failures, rebound(s.port, method, path, name), 200,
                      f'{method} {path} Host: {name}')
    assert not failures, '\n'.join(failures)



def test_a_host_with_more_than_a_name_and_a_port_is_refused(tmp_path, models):
    """Before: "[::1]evil.example" was read as ::1, "[localhost]" as localhost and
    "localhost:evil" as localhost (a port of letters): each answered, /reset included,
    while a proxy or another parser may read another name in them."""
    folder, _ = models
    failures = []
    with Process(tmp_path, *server_args(tmp_path, folder)) as s:
        before = live_state(s)
        for host in ('[::1]evil.example', f'[::1]evil.example:{s.port}', f'[localhost]:{s.port}',
                     'localhost:evil', f'localhost:{s.port}x', '[::1]:80@evil.example'):
            for method, path in (('GET', '/models'), ('POST', '/reset')):
                answer = call(s.port, method, path, headers={
                    'Host': host, 'Origin': f'http://{host}', 'Sec-Fetch-Site': 'same-origin'})
                check(failures, answer, 403, f'{method} {path} Host: {host}')
        if live_state(s) != before:
            failures.append(f'the live net changed: {before} -> {live_state(s)}')
        for host in (f'localhost:{s.port}', f'[::1]:{s.port}', '127.0.0.1', 'LOCALHOST'):
            check(failures, call(s.port, 'GET', '/models', headers={'Host': host}), 200,
                  f'GET /models Host: {host}')
    assert not failures, '\n'.join(failures)

def test_any_host_without_a_token_does_not_start(tmp_path, models):
    folder, _ = models
    server = Process(tmp_path, '--host', '0.0.0.0', '--allowed-hosts', '*', '--models',
                     str(folder), wait=False)
    try:
        assert server.process.wait(60) == 2
        assert 'BTF_TOKEN' in server.output() and 'DNS rebinding' in server.output()
    finally:
        server.stop()
    with Process(tmp_path, '--host', '0.0.0.0', '--models', str(folder), env={
            'BTF_ALLOWED_HOSTS': '*', 'BTF_TOKEN': TOKEN}) as s:
        assert rebound(s.port, 'POST', '/reset').status == 401
        assert rebound(s.port, 'GET', '/samples/export').status == 401
        assert rebound(s.port, 'POST', '/predict').status == 200  # any Host, as asked


# ---------------------------------------------------------------------------------------
# 7. Event streams and connections.

def open_stream(port):
    """A /train/events stream: (socket, what arrived: the head, or a whole error answer)."""
    sock = socket.create_connection(('127.0.0.1', port), timeout=10)
    sock.sendall(b'GET /train/events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n')
    data = b''
    try:
        while b'\r\n\r\n' not in data:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
        length = re.search(rb'(?i)content-length: *(\d+)', data)
        if status_of(data) != 200 and length:
            while len(data.split(b'\r\n\r\n', 1)[1]) < int(length.group(1)):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
    except OSError:
        pass
    return sock, data


def test_event_streams_are_capped_and_idle_ones_cost_nothing(tmp_path, data_file):
    data = tiny_data(data_file, tmp_path, rows=2000)
    with Process(tmp_path, '--data', str(data), '--max-streams', '20',
                 *server_args(tmp_path)) as s:
        streams = [open_stream(s.port) for _ in range(25)]
        statuses = [status_of(head) for _, head in streams]
        assert statuses[:20] == [200] * 20 and statuses[20:] == [503] * 5, statuses
        for _, answer in streams[20:]:
            assert 'error' in body_of(answer), answer
        for sock, _ in streams[20:]:
            sock.close()
        streams[0][0].close()
        time.sleep(0.5)
        again, head = open_stream(s.port)  # a freed slot
        assert status_of(head) == 200
        try:
            before = s.get('/models').json['live']['epochs']
            baseline, _ = p50_predict(s.port, lambda: True, minimum=15)  # 20 streams open
            result = {}
            trainer = threading.Thread(
                target=lambda: result.update(answer=s.post('/train', {'epochs': 3})))
            trainer.start()
            p50, n = p50_predict(s.port, lambda: not trainer.is_alive())
            trainer.join()
            answer = result['answer']
            assert answer.status == 200 and answer.json['epochs'] == before + 3, answer
            assert len(s.get('/train/status').json['history']) == 3
            assert latency_ok(p50, baseline), f'/predict p50 {p50 * 1000:.0f} ms during ' \
                f'training, 20 streams (before it: {baseline * 1000:.0f} ms)'
        finally:
            again.close()
            for sock, _ in streams[1:20]:
                sock.close()


def test_connections_past_the_cap_are_refused(tmp_path):
    with Process(tmp_path, '--max-connections', '50', *server_args(tmp_path)) as s:
        socks, refused = [], 0
        try:
            for _ in range(80):
                try:
                    socks.append(socket.create_connection(('127.0.0.1', s.port), timeout=3))
                except OSError:
                    refused += 1
            time.sleep(1)

            def ask(sock):
                """'ok' (200), 'hung' (nothing within 3 s) or 'closed' (EOF, reset, 503)."""
                sock.settimeout(3)
                try:
                    sock.sendall(b'GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n')
                    answer = sock.recv(65536)
                except TimeoutError:
                    return 'hung'
                except OSError:
                    return 'closed'
                return 'ok' if status_of(answer) == 200 else 'closed'

            with ThreadPoolExecutor(len(socks) or 1) as pool:
                outcomes = list(pool.map(ask, socks))
            answered, hung = outcomes.count('ok'), outcomes.count('hung')
            assert answered <= 50 and hung == 0, (answered, hung, refused)
        finally:
            for sock in socks:
                sock.close()
        time.sleep(0.5)
        assert s.process.poll() is None and s.get('/health', timeout=5).status == 200


# ---------------------------------------------------------------------------------------
# 8. The token is never logged.

def test_the_token_is_never_logged(tmp_path):
    wrong = TOKEN[::-1]
    with Process(tmp_path, '--data', 'none.npz', *server_args(tmp_path),
                 env={'BTF_TOKEN': TOKEN}) as s:
        assert s.get(f'/train?epochs=1&token={TOKEN}').status >= 500
        assert s.get('/train?epochs=1',
                     headers={'Authorization': f'Bearer {TOKEN}'}).status >= 500
        for path, headers in ((f'/train?epochs=1&token={wrong}', {}),
                              ('/train?epochs=1', {'Authorization': f'Bearer {wrong}'}),
                              (f'/reset?token={wrong}', {}),
                              (f'/nowhere?token={TOKEN}', {}),
                              (f'/static/?token={TOKEN}', {}),  # errors that log their URL
                              (f'/static/%00?token={wrong}', {})):
            s.get(path, headers=headers)
        time.sleep(0.5)
    leaks = [line for line in s.output().splitlines() if TOKEN in line or wrong in line]
    assert not leaks, '\n'.join(leaks)


# ---------------------------------------------------------------------------------------
# 9. Static files.

STATIC_TRICKS = ['/static/', '/static/app.js%00.png', '/static/%2e%2e/server.py',
                 '/static/%2e%2e%2fserver.py', '/static/..%2fserver.py', '/static/%00']


def test_static_tricks_are_404(tmp_path):
    failures = []
    with Process(tmp_path, *server_args(tmp_path)) as s:
        for path in STATIC_TRICKS:
            answer = s.get(path)
            if answer.status != 404 or not is_json_error(answer) or b'import ' in answer.body:
                failures.append(f'{path}: {answer}')
    assert not failures, '\n'.join(failures)
    assert 'Traceback' not in s.output()


def test_static_symlink_out_of_the_folder_is_404(serve, tmp_path, caplog):
    (tmp_path / 'secret.txt').write_text('TOP SECRET')
    static = tmp_path / 'static'
    (static / 'leak.txt').symlink_to(tmp_path / 'secret.txt')
    (static / 'sub').mkdir()
    (static / 'sub' / 'x.js').write_text('nested')
    with serve() as s:
        for path in ('/static/leak.txt', '/static/sub', '/static/sub/x.js', '/static/.',
                     '/static/..', '/static/%2e%2e%2fsecret.txt'):
            answer = s.get(path)
            assert answer.status == 404 and is_json_error(answer), (path, answer)
            assert b'TOP SECRET' not in answer.body
    assert 'Traceback' not in caplog.text


# ---------------------------------------------------------------------------------------
# 10. SIGKILL of the main process of --workers 2.

def test_killed_main_process_leaves_no_listener(tmp_path, monkeypatch):
    s = Process(tmp_path, '--workers', '2', *server_args(tmp_path))
    port = s.port
    pids = descendants(s.process.pid)
    try:
        s.kill()
        gone = time.monotonic() + 10
        while listening_address(port) is not None and time.monotonic() < gone:
            time.sleep(0.1)
        assert listening_address(port) is None, \
            f'port {port} is still listened on 10 s after kill -9 of the main process'
        monkeypatch.setattr(conftest, 'free_port', lambda: port)
        with Process(tmp_path, *server_args(tmp_path)) as again:
            assert again.port == port and again.get('/health').status == 200
    finally:
        for pid in pids[1:]:  # orphaned workers of ours
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                pass


def server_workers(main_pid):
    """The pids of a --workers N server's HTTP workers (Sanic names them in their environment)."""
    found = []
    for pid in descendants(main_pid)[1:]:
        try:
            environ = Path(f'/proc/{pid}/environ').read_bytes().split(b'\0')
        except OSError:
            continue
        if any(v.startswith(b'SANIC_WORKER_NAME=Sanic-Server') for v in environ):
            found.append(pid)
    return found


def test_a_killed_worker_is_started_again(tmp_path):
    """kill -9 of a worker (as the out-of-memory killer would): Sanic's manager marked it
    failed and went on with one worker less; with none left, the main process kept the port
    and every connection hung. Now each is started again, and the log says so."""
    with Process(tmp_path, '--workers', '2', *server_args(tmp_path)) as s:
        # Both running (one killed while starting keeps Sanic's manager waiting for it, and
        # Sanic ends the server when it never comes: a start-up failure, not this test's).
        wait_for(lambda: s.output().count('Worker ready') == 2, 'both workers to be ready', 30)
        first = server_workers(s.process.pid)
        assert len(first) == 2, first
        for pid in first:  # both, one after the other
            os.kill(pid, 9)
            time.sleep(0.5)
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline:
            now = server_workers(s.process.pid)
            if len(now) == 2 and not set(now) & set(first):
                break
            time.sleep(0.2)
        assert len(now) == 2 and not set(now) & set(first), (first, now)
        wait_for(lambda: s.get('/health').status == 200, 'the new workers to answer', 30)
        for _ in range(6):
            assert s.post('/predict', {'image': DIGIT}).status == 200
        assert s.output().count('ended unexpectedly') == 2


def test_a_worker_killed_while_starting_ends_the_server_with_an_error(tmp_path):
    """kill -9 of a worker before it has started (SIGBUS on a full disk does the same):
    Sanic's manager restarts no worker before every one has started, and the restart asked
    of it made it spin at 100% CPU on the message, forever, never answering a signal's
    shutdown. Now the server shuts down and exits 1, saying why."""
    for attempt in range(8):
        folder = tmp_path / str(attempt)
        folder.mkdir()
        s = Process(folder, '--workers', '2', *server_args(tmp_path), wait=False)
        try:
            deadline = time.monotonic() + 60
            while not (found := re.findall(r'Starting worker \[(\d+)\]', s.output())):
                assert s.process.poll() is None and time.monotonic() < deadline, s.output()
                time.sleep(0.002)
            os.kill(int(found[0]), 9)  # it has its app, and is loading models and stores
            wait_for(lambda s=s: s.process.poll() is not None or
                     'starting it again' in s.output(),
                     'the server to end, or to start the worker again', 60)
            if s.process.poll() is None:  # the kill came after the worker had started:
                victim = int(found[0])
                wait_for(lambda s=s, victim=victim:
                         len(set(server_workers(s.process.pid)) - {victim}) == 2,
                         'the worker to be started again', 30)
                continue  # once more
            assert s.process.wait() == 1, s.output()[-3000:]
            assert 'worker Sanic-Server-' in s.output() and 'ended while starting' in s.output()
            return
        finally:
            s.stop()
    pytest.fail('no kill came before a worker had started')


# ---------------------------------------------------------------------------------------
# 11. Hostile start-up state, 12. an empty token.

def start_or_fail(tmp_path, args, env=None, timeout=30):
    """(Popen, log text) once the server answers /health or exits (within ``timeout``)."""
    port = free_port()
    log = tmp_path / f'server-{port}.log'
    clean = {k: v for k, v in os.environ.items() if k not in ('HOST', 'PORT', 'BTF_TOKEN')}
    with open(log, 'wb') as out:
        process = subprocess.Popen([sys.executable, str(ROOT / 'server.py'), '--port',
                                    str(port), *args], cwd=tmp_path,
                                   env={**clean, **(env or {})}, stdout=out,
                                   stderr=subprocess.STDOUT)
    deadline, healthy = time.monotonic() + timeout, False
    try:
        while time.monotonic() < deadline and process.poll() is None:
            try:
                healthy = call(port, 'GET', '/health', timeout=2).status == 200
            except OSError:
                pass
            if healthy:
                break
            time.sleep(0.2)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(30)
    return process, healthy, log.read_text(errors='replace')


def test_unwritable_state_folder_still_serves(tmp_path, models):
    folder, _ = models
    blocker = tmp_path / 'state-is-a-file'
    blocker.write_text('not a folder')
    args = ['--models', str(folder), '--state', str(blocker)]
    with Process(tmp_path, *args) as s:
        assert s.post('/predict', {'image': DIGIT}).status == 200
        assert s.get('/models').status == 200
    assert str(blocker) in s.output(), s.output()[-2000:]


@pytest.mark.parametrize('manifest, best', [
    ({'models': 5}, None),
    ({'best': [1], 'models': 'VALID'}, 2),
    ({'best': True, 'models': 'VALID'}, 2),
    ({'best': {'v': 1}, 'models': 'VALID'}, 2),
])
def test_hostile_manifest_is_logged_and_skipped(tmp_path, models, manifest, best):
    folder, _ = models
    path = folder / 'models.json'
    entries = json.loads(path.read_text())['models']  # v1 (accuracy 0.1), v2 (0.2)
    path.write_text(json.dumps({k: entries if v == 'VALID' else v
                                for k, v in manifest.items()}))
    with Process(tmp_path, *server_args(tmp_path, folder)) as s:
        listed = s.get('/models').json
        assert listed['best'] == best and listed['best'] is not True, listed
        assert s.post('/predict', {'image': DIGIT}).status == 200
    assert 'models.json' in s.output()


def test_live_net_declaring_huge_sizes_is_set_aside(tmp_path, models):
    folder, _ = models
    where = state_dir(tmp_path, folder)
    where.mkdir(parents=True, exist_ok=True)
    sizes = [784, 200_000_000, 10]  # 627 GB of float32 weights if believed
    arrays = {'format_version': np.int64(1), 'sizes': np.array(sizes, np.int64),
              'learning_rate': np.float64(0.5), 'batch_size': np.int64(128),
              'epochs': np.int64(3), 'init': np.str_('scaled'),
              'cost': np.str_('cross_entropy'), 'output': np.str_('softmax'),
              'dtype': np.str_('float32'), 'seed': np.int64(-1),
              'W0': np.zeros((784, 2), np.float32), 'b0': np.zeros(2, np.float32),
              'W1': np.zeros((2, 10), np.float32), 'b1': np.zeros(10, np.float32)}
    with open(where / 'live.npz', 'wb') as f:
        np.savez(f, **arrays)
    started = time.monotonic()
    with Process(tmp_path, *server_args(tmp_path, folder)) as s:
        assert time.monotonic() - started < 30
        assert s.peak_memory() < 1024 * MB
        assert s.post('/predict', {'image': DIGIT}).status == 200
    assert list(where.glob('live.corrupt-*')), sorted(p.name for p in where.iterdir())


def test_empty_token_refuses_to_start(tmp_path):
    process, healthy, log = start_or_fail(tmp_path, server_args(tmp_path),
                                          env={'BTF_TOKEN': ''})
    assert not healthy, 'the server started with BTF_TOKEN set to an empty string'
    assert process.returncode not in (None, 0) and 'BTF_TOKEN' in log, log[-2000:]


# ---------------------------------------------------------------------------------------
# 5. Disk full while saving the live net.

def test_disk_full_while_saving_keeps_the_saved_net(tmp_path, data_file):
    if os.geteuid() != 0:
        pytest.skip('mounting a small tmpfs needs root')
    disk = tmp_path / 'disk'
    disk.mkdir()
    if subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=6m', 'tmpfs', str(disk)],
                      capture_output=True).returncode:
        pytest.skip('cannot mount a tmpfs here')
    try:
        folder, state = tmp_path / 'models', disk
        args = ['--models', str(folder), '--state', str(state)]
        write_models(folder, {1: (784, 20, 10), 2: (784, 30, 10)}, best=2)
        data = tiny_data(data_file, tmp_path)
        args += ['--data', str(data)]
        with Process(tmp_path, *args) as s:
            live = s.get('/models').json['live']
            assert (state / 'live.npz').exists()
            predicted = s.post('/predict', {'image': DIGIT}).json
            stats = os.statvfs(disk)
            free = stats.f_bavail * stats.f_frsize
            with open(disk / 'filler', 'wb') as f:  # leave less than a live.npz
                f.write(b'\0' * max(0, free - 64 * 1024))
            answer = s.post('/train', {'epochs': 1})
            assert answer.status == 507 and re.search(r'disk|space', answer.json['error']), \
                answer
            assert s.get('/models').json['live'] == live
            assert s.post('/predict', {'image': DIGIT}).json == predicted
        # It ended well: its metrics' files were not on the full disk (a page of one, written
        # through mmap, was a SIGBUS at the exit: -7; at a worker's start, the end of it).
        assert s.process.returncode == 0, s.output()[-3000:]
        with Process(tmp_path, *args, '--workers', '2') as s:
            assert s.get('/models').json['live'] == live
            assert s.post('/train', {'epochs': 1}).status == 507
            epochs = {s.get('/models').json['live']['epochs'] for _ in range(20)}
            assert epochs == {live['epochs']}
    finally:
        subprocess.run(['umount', '-l', str(disk)])


def test_a_full_disk_under_the_metrics_never_kills_a_worker(tmp_path):
    """The metrics files (prometheus-client's, written through mmap) on a disk that fills:
    a page of a file's hole written through mmap is a SIGBUS, and the worker died at the
    first new label set (a new route or status), or as it started. Their blocks are now
    allocated first: a value that cannot be kept is lost, and logged, never the worker."""
    if os.geteuid() != 0:
        pytest.skip('mounting a small tmpfs needs root')
    disk = tmp_path / 'disk'
    disk.mkdir()
    if subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=1m', 'tmpfs', str(disk)],
                      capture_output=True).returncode:
        pytest.skip('cannot mount a tmpfs here')
    try:
        env = {'PROMETHEUS_MULTIPROC_DIR': str(disk)}  # the operator's folder, on that disk
        with Process(tmp_path, *server_args(tmp_path), env=env) as s:
            assert s.post('/predict', {'image': DIGIT}).status == 200
            assert s.get('/metrics').status == 200
            with open(disk / 'filler', 'wb', buffering=0) as f, \
                    contextlib.suppress(OSError):  # every block the disk has left
                while True:
                    f.write(b'\0' * 4096)
            for path, operations in s.get('/openapi.json').json['paths'].items():
                if re.search(r'events|train|pretrain|reset', path):
                    continue  # (they would train, or stream)
                for method in set(operations) & {'get', 'post', 'delete'}:
                    # (route, method, status)s never seen: new values in the files
                    s.call(method.upper(), re.sub(r'{[^}]*}', 'x', path))
            assert s.process.poll() is None, s.output()[-3000:]
            assert s.post('/predict', {'image': DIGIT}).status == 200
            assert s.get('/metrics').status == 200
            assert 'a new value could not be kept (No space left on device)' in s.output()
        assert s.process.returncode == 0, s.output()[-3000:]
        # A start on the full disk: metrics off in that worker (503), the rest served.
        with Process(tmp_path, *server_args(tmp_path), env=env) as s:
            assert s.post('/predict', {'image': DIGIT}).status == 200
            assert s.get('/metrics').status in (200, 503)
    finally:
        subprocess.run(['umount', '-l', str(disk)])


# ---------------------------------------------------------------------------------------
# The third outside attack: requests abandoned half-way through a change of the live net.

def abandon(port, path, after=0.0):
    """Send GET ``path`` and hang up (with a reset) ``after`` seconds later, unanswered."""
    sock = socket.create_connection(('127.0.0.1', port))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b'\x01\x00\x00\x00\x00\x00\x00\x00')
    sock.sendall(f'GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n'.encode())
    time.sleep(after)
    sock.close()


def test_an_abandoned_change_leaves_no_lock_behind(tmp_path):
    """A /reset, /pretrain or /train whose client hangs up at once: the lock its thread took
    after the handler was cancelled stayed held, every later change 409 until a restart."""
    with Process(tmp_path, *server_args(tmp_path)) as s:
        for path in ('/reset', '/pretrain', '/train') * 5:
            abandon(s.port, path)
        time.sleep(0.5)
        # A /train that reached the queue before its client left is work the queue owns: it
        # runs (a busy machine starts it late). What must not stay is a lock once it ended.
        wait_for(lambda: s.get('/train/status').json.get('state') not in ('queued', 'running'),
                 'the queued trainings to end', 300)
        for path in ('/reset', '/pretrain'):
            answer = s.get(path)
            assert answer.status == 200, (path, answer)


def test_an_abandoned_pretrain_never_undoes_a_later_reset(tmp_path):
    """The pretrain's save went on in its thread after its handler was cancelled and the lock
    released: a /reset answered 200 in between was then overwritten (15 of 66 trials)."""
    folder = tmp_path / 'models'
    write_models(folder, {1: (784, 800, 10)}, best=1)  # a save of a few MB
    with Process(tmp_path, *server_args(tmp_path, folder)) as s:
        for trial in range(20):
            abandon(s.port, '/pretrain', after=0.002 + 0.002 * trial)
            answer = s.get('/reset')
            assert answer.status == 200, answer
            time.sleep(0.3)
            sizes = s.get('/models').json['live']['sizes']
            assert sizes == [784, 30, 10], f'trial {trial}: the reset was undone ({sizes})'


def test_a_killed_training_process_is_a_clear_error_and_frees_the_lock(tmp_path, data_file):
    """kill -9 of the training child: /train answers 500 with a message, the log names the
    signal (it said "exit code None"), the live net is unchanged and the next /train runs."""
    with Process(tmp_path, *server_args(tmp_path), '--data', str(data_file)) as s:
        before = s.get('/models').json['live']
        result = {}
        thread = threading.Thread(target=lambda: result.update(
            answer=s.post('/train', {'epochs': 50})))
        thread.start()
        wait_for(lambda: s.get('/train/status').json['running'], 'the training to start', 60)

        def trainers():  # the job runs before its process has started, on a busy machine
            found = []
            for pid in descendants(s.process.pid)[1:]:
                try:
                    if b'spawn_main' in Path(f'/proc/{pid}/cmdline').read_bytes():
                        found.append(pid)
                except OSError:
                    pass
            return found

        wait_for(trainers, 'the training process to start', 60)
        trainers = trainers()
        assert len(trainers) == 1, trainers
        os.kill(trainers[0], 9)
        thread.join(60)
        answer = result['answer']
        assert answer.status == 500 and 'ended unexpectedly' in answer.json['error'], answer
        assert 'killed by SIGKILL' in s.output()
        assert s.get('/models').json['live'] == before
        assert s.get('/reset').status == 200  # the lock is free


# ---------------------------------------------------------------------------------------
# A zip bomb as the live net (issue #20, 7): write access to the state folder.

def test_a_zip_bomb_in_the_state_folder_is_refused_unread(tmp_path, models):
    """A live.npz of 520 KiB whose W0 declares, and inflates to, 512 MiB: the worker that
    notices it reads its headers only, off the event loop, logs the refusal, keeps answering
    with its net, and says in its readiness that it is behind the store."""
    folder, nets = models
    with Process(tmp_path, *server_args(tmp_path, folder)) as s:
        baseline, memory = conftest.latencies(s), s.peak_memory()
        bomb = conftest.zip_bomb(nets[2], 'W0.npy', (2 ** 27,), 512)
        (s.state / 'bomb.tmp').write_bytes(bomb)
        os.replace(s.state / 'bomb.tmp', s.state / 'live.npz')
        with ThreadPoolExecutor(2) as pool:
            asked = [pool.submit(s.get, '/models') for _ in range(2)]
            during = conftest.latencies(s, n=10)
            answers = [a.result(timeout=60) for a in asked]
        assert max(during) < max(50 * statistics.median(baseline), 5 * max(baseline)), \
            (baseline, during)
        assert s.peak_memory() < memory + 128 * MB, (memory, s.peak_memory())
        assert [a.status for a in answers] == [200, 200]
        assert answers[0].json['live']['sizes'] == [784, 30, 10]
        wait_for(lambda: "'W0.npy' declares float32 (134217728,)" in s.output(),
                 'the refusal in the log', 30)
        ready = s.get('/health/ready')
        assert ready.status == 503 and 'behind the store' in ready.json['checks']['live']
        assert s.post('/predict', {'image': DIGIT}).status == 200



def test_a_zip_of_half_a_million_members_in_the_state_folder_is_refused_unread(tmp_path,
                                                                                 models):
    """Before: a live.npz of 27 MB holding 500,000 empty members was read into a ZipInfo
    each (10 s of CPU, +300 MB) before being refused, and again at each reload attempt
    (every 5 s): /health's median 30 times slower, for as long as the file stayed."""
    folder, _ = models
    with Process(tmp_path, *server_args(tmp_path, folder)) as s:
        baseline, memory = conftest.latencies(s), s.peak_memory()
        (s.state / 'bomb.tmp').write_bytes(conftest.many_members(500_000))
        os.replace(s.state / 'bomb.tmp', s.state / 'live.npz')
        wait_for(lambda: '(500000 members declared)' in s.output(), 'the refusal in the log', 60)
        during = conftest.latencies(s, n=20)
        assert statistics.median(during) < 5 * statistics.median(baseline) + 0.005, \
            (baseline, during)
        assert s.peak_memory() < memory + 128 * MB, (memory, s.peak_memory())
        assert s.post('/predict', {'image': DIGIT}).status == 200

# ---------------------------------------------------------------------------------------
# Issue #20 (items 3, 4, 8): work a client makes the server do, counted as the server
# process's CPU time against a control request of the same size (not timed on the clock).

def cpu_seconds(s):
    """User and system CPU seconds the server process has used so far."""
    stat = Path(f'/proc/{s.process.pid}/stat').read_text()
    fields = stat.rsplit(')', 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf('SC_CLK_TCK')


def cpu_of(s, send, times):
    """(CPU seconds the server spent, answers) for ``times`` calls of ``send``, one after
    another, counted from a quiet server until it is quiet again."""
    time.sleep(0.3)
    before = cpu_seconds(s)
    answers = [send() for _ in range(times)]
    time.sleep(0.3)  # what the server does after answering (its log lines)
    return cpu_seconds(s) - before, answers


# An ESC (and a CSI) in the request line: httptools refuses the URL. Each "://" once made the
# log redactor's pattern scan to the end of the line.
BAD_URL = (b'GET /\x1b[31m' + b'://a:' * 1600 +
           b' HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n')
SAME_LENGTH_URL = (b'GET /a/a/a' + b'/a/a:' * 1600 +
                   b' HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n')


@pytest.mark.parametrize('log_format', ['text', 'json'])
def test_bad_urls_are_a_400_and_one_short_log_line(tmp_path, log_format):
    """Before: no answer, a 44-line traceback holding the URL four times (its ESC bytes raw
    in the text log), and redacting it cost seconds of CPU on the event loop."""
    assert len(BAD_URL) == len(SAME_LENGTH_URL)
    with Process(tmp_path, *server_args(tmp_path), '--access-log',
                 '--log-format', log_format) as s:
        control, _ = cpu_of(s, lambda: raw_request(s.port, SAME_LENGTH_URL)[1], 20)
        spent, answers = cpu_of(s, lambda: raw_request(s.port, BAD_URL)[1], 20)
        for answer in answers:
            assert status_of(answer) == 400, answer[:200]
            error = body_of(answer)['error']
            assert 'not a valid HTTP target' in error and len(error) < 400, error
        assert spent < 3 * control + 0.2, (spent, control)
        s.stop()
    output = s.output()
    assert 'Traceback' not in output and '\x1b' not in output, output[-3000:]
    lines = [line for line in output.splitlines() if '://a:' in line]
    assert len(lines) == 20 and all(len(line) < 1000 for line in lines), lines[:2]
    if log_format == 'json':
        assert all(json.loads(line)['status'] == 400 for line in lines)


def test_a_head_too_large_names_the_heads_limit(tmp_path):
    with Process(tmp_path, *server_args(tmp_path)) as s:
        for header in (b'X-Request-ID: ' + b'r' * 100_000, b'Cookie: c=' + b'k' * 60_000):
            _, answer = raw_request(s.port, b'GET /health HTTP/1.1\r\nHost: localhost\r\n'
                                    + header + b'\r\n\r\n')
            assert status_of(answer) == 413, answer[:200]
            error = body_of(answer)['error']
            assert 'head' in error and str(16 * MB) not in error, error


def test_v2_json_numbers_are_counted_before_parsing(tmp_path):
    """Before: 5,000 rows of JSON numbers (15 MiB) were parsed, with the GIL held for
    seconds by orjson and np.array; the same rows in binary cost a tenth of it."""
    rows = 5000
    head = json.dumps({'inputs': [{'name': 'input', 'datatype': 'FP32', 'shape': [rows, 784],
                                   'parameters': {'binary_data_size': rows * 784 * 4}}]})
    binary = head.encode() + bytes(rows * 784 * 4)
    numbers = (b'{"inputs": [{"name": "input", "datatype": "FP32", "shape": [5000, 784], '
               b'"data": [' + b'0.0,' * (rows * 784 - 1) + b'0.0]}]}')
    assert abs(len(numbers) - len(binary)) < 1000
    url = '/v2/models/mnist/infer'
    with Process(tmp_path, *server_args(tmp_path)) as s:
        control, answers = cpu_of(s, lambda: call(
            s.port, 'POST', url, binary, {'Inference-Header-Content-Length': str(len(head))}), 3)
        assert all(answer.status == 200 for answer in answers), answers[0]
        spent, answers = cpu_of(s, lambda: call(s.port, 'POST', url, numbers), 3)
        assert spent < 2 * control + 0.15, (spent, control)
        for answer in answers:
            assert answer.status == 400 and 'binary_data_size' in answer.json['error'], answer


def test_base64_broken_by_spaces_costs_what_one_line_costs(tmp_path):
    """Before: base64 with whitespace fell back to one re.sub over the whole string (seconds
    for 15 MiB broken every 4 characters), and a regular expression over it again."""
    spaced = json.dumps({'image': 'AAAA ' * (3 * MB)})
    one_line = json.dumps({'image': 'AAAA' * (3 * MB) + ' ' * (3 * MB)})  # stripped: one line
    assert len(spaced) == len(one_line)
    with Process(tmp_path, *server_args(tmp_path)) as s:
        control, answers = cpu_of(s, lambda: s.post('/predict', one_line), 3)
        assert all(answer.status == 400 for answer in answers), answers[0]
        spent, answers = cpu_of(s, lambda: s.post('/predict', spaced), 3)
        assert all(answer.status == 400 for answer in answers), answers[0]
        assert spent < 2 * control + 0.15, (spent, control)


def test_a_small_jpeg_behind_megabytes_of_junk_costs_what_its_size_costs(tmp_path):
    """Before: a 28x28 JPEG with 11 MB of junk between two header segments (libjpeg skips it
    with a warning) was read as small and cheap: the marker walk (one regular expression
    call, 0.4 s) and the decode ran on the event loop, /health waited about a second, and
    the answer was a prediction."""
    import base64

    import cv2
    image = np.zeros((28, 28), np.uint8)
    cv2.circle(image, (14, 14), 8, 255, 3)
    jpeg = cv2.imencode('.jpg', image)[1].tobytes()
    cut = 4 + int.from_bytes(jpeg[4:6], 'big')  # after SOI and APP0
    junk = jpeg[:cut] + b'A' * (11 * MB) + jpeg[cut:]
    control = b'\x89PNX' + b'A' * (len(junk) - 4)  # refused at its signature
    with Process(tmp_path, *server_args(tmp_path)) as s:
        def send(data):
            body = json.dumps({'image': base64.b64encode(data).decode()})
            return lambda: s.post('/predict', body)
        spent_control, answers = cpu_of(s, send(control), 3)
        assert all(answer.status == 400 for answer in answers), answers[0]
        spent, answers = cpu_of(s, send(junk), 3)
        assert spent < 1.5 * spent_control + 0.1, (spent, spent_control)
        for answer in answers:
            assert answer.status == 400 and 'junk' in answer.json['error'], answer
