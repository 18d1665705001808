"""What an operator relies on (service/observability.py, service/routes/health.py, server.py,
Dockerfile): readiness, metrics summed over workers, request ids on log lines, JSON logs,
graceful shutdown on SIGTERM, and a container that runs what `make run` runs."""
import http.client
import json
import logging
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
from prometheus_client.mmap_dict import MmapedDict, mmap_key
from prometheus_client.parser import text_string_to_metric_families

import server
from tests.conftest import DIGIT, ROOT, Process, file_digest, tiny_data, wait_for

UUID4 = re.compile(r'[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}')


def samples(text, name):
    """{frozenset of labels: value} of the samples called ``name`` in an exposition."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                found[frozenset(sample.labels.items())] = sample.value
    return found


def value(text, name, **labels):
    return samples(text, name).get(frozenset(labels.items()), 0.0)


# ---------------------------------------------------------------------------------------
# Liveness and readiness.

def test_live_and_ready(serve):
    with serve() as s:
        assert s.get('/health/live').json == {'status': 'ok'}
        ready = s.get('/health/ready')
        assert ready.status == 200
        assert ready.json == {'status': 'ready', 'checks': {
            'pretrained': 'ok', 'live': 'ok', 'storage': 'ok', 'samples': 'ok'}}
        assert s.get('/health').json == {'status': 'ok'}  # unchanged


def test_not_ready_names_the_failing_check(serve, tmp_path):
    # No pretrained models.
    with serve(models_dir=tmp_path / 'none') as s:
        answer = s.get('/health/ready')
        assert answer.status == 503
        assert answer.json['error'].startswith('not ready: pretrained: no pretrained models')
        assert answer.json['checks']['live'] == 'ok'
        assert s.get('/health/live').status == 200
        assert s.get('/v2/health/ready').status == 503
    # The sample store cannot be opened (its file is a folder).
    state = tmp_path / 'state2'
    (state / 'samples.sqlite3').mkdir(parents=True)
    with serve(state_dir=state) as s:
        answer = s.get('/health/ready')
        assert answer.status == 503 and answer.json['error'].startswith('not ready: samples:')
        assert answer.json['checks']['storage'] == 'ok'
    # The state folder goes away while serving.
    with serve() as s:
        assert s.get('/health/ready').status == 200
        for path in s.state.iterdir():
            path.unlink() if path.is_file() else None
        renamed = s.state.with_name('gone')
        s.state.rename(renamed)
        answer = s.get('/health/ready')
        assert answer.status == 503
        assert answer.json['checks']['storage'] == f'{s.state} is not a folder'
        renamed.rename(s.state)


def test_readiness_follows_the_database(tmp_path, models, database, postgres):
    folder, _ = models
    with Process(tmp_path, '--models', str(folder), '--database', database) as p:
        assert p.get('/health/ready').status == 200
        postgres.stop()
        try:
            wait_for(lambda: p.get('/health/ready').status == 503, 'not ready', timeout=30)
            answer = p.get('/health/ready').json
            assert 'unreachable' in answer['checks']['storage'], answer
            assert answer['error'].startswith('not ready: storage: the database at ')
            assert p.get('/health/live').status == 200
        finally:
            postgres.start()
        wait_for(lambda: p.get('/health/ready').status == 200, 'ready again', timeout=30)


# ---------------------------------------------------------------------------------------
# Request ids.

def test_request_ids_are_kept_when_valid_else_made(serve):
    with serve() as s:
        given = 'trace-1.A_b'
        assert s.get('/health', headers={'X-Request-ID': given}).headers['X-Request-ID'] == given
        longest = 'a' * 128
        assert s.get('/health', headers={'X-Request-ID': longest}).headers[
            'X-Request-ID'] == longest
        for bad in ('a' * 129, 'has space', 'semi;colon', 'é', ''):
            made = s.get('/health', headers={'X-Request-ID': bad}).headers['X-Request-ID']
            assert UUID4.fullmatch(made), (bad, made)
        made = {s.get('/health').headers['X-Request-ID'] for _ in range(3)}
        assert len(made) == 3 and all(UUID4.fullmatch(m) for m in made)
        # On errors too: an unknown route, a refused image, a bad Host.
        for answer in (s.get('/nowhere', headers={'X-Request-ID': 'e1'}),
                       s.post('/predict', {'image': 'nope'}, headers={'X-Request-ID': 'e1'}),
                       s.get('/models', headers={'X-Request-ID': 'e1', 'Host': 'evil.example'})):
            assert answer.status in (400, 403, 404) and answer.headers['X-Request-ID'] == 'e1'


def test_answer_headers_are_still_cleaned_of_cr_lf_and_nul(serve):
    """protocol.clean_header_value replaces Sanic's header cleaning (its cost was most of the
    request id's): the same result, so no header can carry a second header or answer."""
    from sanic.response import HTTPResponse
    with serve() as s:  # an app is built: its answers clean headers our way
        dirty = HTTPResponse(b'', headers={'x-a': 'one\r\nSet-Cookie: x=1\x00', 'x-b': 'plain',
                                           'x\r\n-c': 'v'})
        assert list(dirty.processed_headers)[:3] == [
            (b'x-a', b'oneSet-Cookie: x=1'), (b'x-b', b'plain'), (b'x-c', b'v')]
        assert s.get('/health').status == 200


def test_request_ids_off(serve):
    with serve(request_ids=False, metrics=False) as s:
        assert 'X-Request-ID' not in s.get('/health', headers={'X-Request-ID': 'x'}).headers


# ---------------------------------------------------------------------------------------
# Metrics.

def test_metrics_count_requests_predictions_and_refused_images(serve):
    with serve() as s:
        for _ in range(3):
            assert s.post('/predict', {'image': DIGIT}).status == 200
        assert s.post('/predict', {'image': DIGIT, 'pretrained': 1}).status == 200
        assert s.post('/predict', {'image': 'not base64!'}).status == 400
        assert s.post('/predict', {'image': 'data:image/png;base64,' + 'A' * 8}).status == 400
        blank = s.post('/samples', {'image': DIGIT, 'label': 4})
        assert blank.status == 201
        assert s.get('/nowhere').status == 404
        answer = s.get('/metrics')
        assert answer.status == 200
        assert answer.headers['Content-Type'].startswith('text/plain; version=0.0.4')
        text = answer.body.decode()
    count = 'btf_request_duration_seconds_count'  # requests by route, method and status
    assert value(text, count, route='/predict', method='POST', status='200') == 4
    assert value(text, count, route='/predict', method='POST', status='400') == 2
    assert value(text, count, route='unmatched', method='GET', status='404') == 1
    assert value(text, 'btf_request_duration_seconds_bucket', route='/predict', method='POST',
                 status='200', le='10.0') == 4
    assert value(text, 'btf_predictions_total', model='live') == 3
    assert value(text, 'btf_predictions_total', model='v1') == 1
    assert value(text, 'btf_images_refused_total', status='400', reason='BadRequest') == 2
    assert value(text, 'btf_samples_stored_total') == 1
    assert value(text, 'btf_training_jobs_total', event='started') == 0
    assert value(text, 'btf_event_streams') == 0


def test_made_up_methods_are_one_label_value(serve):
    """Any token is a method to HTTP, up to kilobytes long; each new label value would be a
    new series in every worker's metrics file (1,000 methods of 7,000 characters made a
    134 MB file and a 120 MB /metrics answer). Unknown methods count as 'other'."""
    with serve(access_log=True) as s:
        for k in range(40):
            assert s.call(f'M{k:04d}' + 'A' * 2000, '/health').status == 405
        assert s.call('PATCH', '/health').status == 405
        text = s.get('/metrics').body.decode()
    count = 'btf_request_duration_seconds_count'
    methods = {dict(labels)['method'] for labels in samples(text, count)}
    assert methods <= {'GET', 'PATCH', 'other'}, methods
    assert value(text, count, route='unmatched', method='other', status='405') == 40
    assert value(text, count, route='unmatched', method='PATCH', status='405') == 1
    assert len(text) < 20_000


def test_metrics_need_the_metrics_token_or_else_the_token(serve):
    with serve(metrics_token='m-secret') as s:
        assert s.get('/metrics').status == 401
        assert s.get('/metrics', headers={'Authorization': 'Bearer wrong'}).status == 401
        assert s.get('/metrics', headers={'Authorization': 'Bearer m-secret'}).status == 200
    with serve(token='t-secret') as s:
        refused = s.get('/metrics')
        assert refused.status == 401 and "server's token" in refused.json['error']
        assert s.get('/metrics', headers={'Authorization': 'Bearer t-secret'}).status == 200
    with serve(metrics=False) as s:
        assert s.get('/metrics').status == 404


def test_a_named_metrics_folder_keeps_what_it_held(tmp_path, models):
    """PROMETHEUS_MULTIPROC_DIR names a folder of the operator's: the server works in a folder
    of its own inside it, never deletes the operator's files, and removes its own at the end."""
    folder, _ = models
    shared = tmp_path / 'shared-metrics'
    shared.mkdir()
    (shared / 'other-service_counter_1.db').write_bytes(b'not ours')
    (shared / 'notes.txt').write_text('not ours either')
    with Process(tmp_path, '--models', str(folder),
                 env={'PROMETHEUS_MULTIPROC_DIR': str(shared)}) as s:
        assert s.post('/predict', {'image': DIGIT}).status == 200
        text = s.get('/metrics').body.decode()
        assert 'btf_predictions_total' in text
        ours = [p for p in shared.iterdir() if p.name.startswith('btf-metrics-')]
        assert len(ours) == 1 and list(ours[0].glob('*.db'))
    assert sorted(p.name for p in shared.iterdir()) == ['notes.txt',
                                                        'other-service_counter_1.db']
    assert (shared / 'other-service_counter_1.db').read_bytes() == b'not ours'


def test_training_and_streams_in_metrics(serve_data, data_file, tmp_path):
    with serve_data(data_path=tiny_data(data_file, tmp_path)) as s:
        conn = http.client.HTTPConnection('127.0.0.1', s.port, timeout=60)
        conn.request('GET', '/train/events')
        stream = conn.getresponse()
        stream.readline()  # the first event: the stream is open
        text = s.get('/metrics').body.decode()
        assert value(text, 'btf_event_streams') == 1
        assert s.post('/train', {'epochs': 2}).status == 200
        assert s.post('/train', {'epochs': 0}).status == 400  # refused: no job
        conn.close()
        wait_for(lambda: not s.app.ctx.streams.queues, 'the stream to close')
        text = s.get('/metrics').body.decode()
    assert value(text, 'btf_event_streams') == 0
    assert value(text, 'btf_training_jobs_total', event='started') == 1
    assert value(text, 'btf_training_jobs_total', event='finished') == 1
    assert value(text, 'btf_training_jobs_total', event='failed') == 0
    assert value(text, 'btf_training_epoch_seconds_count') == 2


def per_worker(folder, route):
    """{pid: requests to ``route`` counted by that process}, read from its own metrics file."""
    counts = {}
    for path in Path(folder).glob('histogram_*.db'):
        pid = int(path.stem.split('_')[1])
        for key, number, *_ in MmapedDict.read_all_values_from_file(str(path)):
            _, sample, labels, *_ = json.loads(key)
            # Each bucket in the file holds its own observations (not cumulative).
            if sample == 'btf_request_duration_seconds_bucket' and labels.get('route') == route:
                counts[pid] = counts.get(pid, 0) + number
    counts = {pid: n for pid, n in counts.items() if n}
    return counts


def test_two_workers_give_one_summed_view(tmp_path):
    with Process(tmp_path, '--workers', '2', '--models', str(tmp_path / 'none')) as p:
        folder = metrics_folder(p)
        sent = 0
        # Fresh connections until both workers have answered /health/live (each writes what
        # it counted to its file a few times a second).
        while len(per_worker(folder, '/health/live')) < 2:
            assert p.get('/health/live').status == 200
            sent += 1
            assert sent < 400, per_worker(folder, '/health/live')
            time.sleep(0.05)
        wait_for(lambda: sum(per_worker(folder, '/health/live').values()) == sent,
                 'every request counted', timeout=10)
        assert len(per_worker(folder, '/health/live')) == 2
        # Whichever worker answers /metrics, each counter appears once, summed.
        for _ in range(4):
            text = p.get('/metrics').body.decode()
            found = samples(text, 'btf_request_duration_seconds_count')
            mine = [v for labels, v in found.items() if ('route', '/health/live') in labels]
            assert mine == [sent]
        # An event stream open on one worker: the live gauge sums to 1.
        conn = http.client.HTTPConnection('127.0.0.1', p.port, timeout=30)
        conn.request('GET', '/train/events')
        conn.getresponse().readline()
        assert value(p.get('/metrics').body.decode(), 'btf_event_streams') == 1
        conn.close()


def metrics_folder(p):
    """The folder of a server's figures: its own, in <state>/metrics."""
    found = [f for f in (p.state / 'metrics').iterdir() if f.is_dir()]
    assert len(found) == 1, found
    return found[0]


def test_a_second_server_on_the_state_folder_keeps_the_first_ones_figures(tmp_path):
    """A new server started on the state folder before the old one stops: its start
    emptied <state>/metrics, and the first server's /metrics lost what it had counted.
    Each server has a folder of its own, removed when the server ends; a dead server's
    (kill -9: its lock is free) goes at the next start."""
    def predictions(p):
        return value(p.get('/metrics').body.decode(), 'btf_predictions_total', model='live')

    with Process(tmp_path) as first:
        for _ in range(3):
            assert first.post('/predict', {'image': DIGIT}).status == 200
        wait_for(lambda: predictions(first) == 3, 'three predictions counted', timeout=10)
        (tmp_path / 'second').mkdir()
        second = Process(tmp_path / 'second', '--state', str(first.state))
        with second:
            assert first.post('/predict', {'image': DIGIT}).status == 200
            wait_for(lambda: predictions(first) == 4, 'the fourth counted', timeout=10)
            assert predictions(second) == 0
        assert metrics_folder(first)  # only the first one's is left
    dead = first.state / 'metrics' / 'server-000000000000'  # as kill -9 leaves it: at once
    dead.mkdir()
    (first.state / 'metrics' / 'server-000000000000.lock').touch()
    with Process(tmp_path, '--state', str(first.state)) as third:
        assert metrics_folder(third).name != dead.name
        assert sorted(f.name for f in (first.state / 'metrics').iterdir()) == sorted(
            [metrics_folder(third).name, metrics_folder(third).name + '.lock'])


def test_a_killed_workers_live_gauge_leaves_the_sum(tmp_path):
    """A worker killed without a word leaves its gauge file behind: /metrics marks it dead."""
    with Process(tmp_path) as p:
        folder = metrics_folder(p)
        dead = subprocess.Popen(['true'])
        dead.wait()  # a pid that no longer runs
        ghost = MmapedDict(str(folder / f'gauge_livesum_{dead.pid}.db'))
        ghost.write_value(mmap_key('btf_event_streams', 'btf_event_streams', [], [],
                                   'open /train/events streams'), 5.0, 0.0)
        ghost.close()
        assert value(p.get('/metrics').body.decode(), 'btf_event_streams') == 0
        assert not (folder / f'gauge_livesum_{dead.pid}.db').exists()
        assert list(folder.glob(f'gauge_livesum_{p.process.pid}.db'))  # the live one stays


# ---------------------------------------------------------------------------------------
# Logs.

def lines_of(output):
    return [line for line in output.splitlines() if line.strip()]


def test_request_id_on_log_lines_in_text(tmp_path):
    with Process(tmp_path, '--access-log') as p:
        assert p.get('/reset', headers={'X-Request-ID': 'reset-77'}).status == 200
        answer = p.get('/models')
        made = answer.headers['X-Request-ID']
    output = p.output()
    reset = [line for line in lines_of(output) if line.endswith(' [reset-77]')]
    assert any(' INFO live net reset' in line for line in reset), output[-3000:]
    assert any(' INFO GET /reset 200 ' in line for line in reset), output[-3000:]
    assert any(line.endswith(f'[{made}]') and 'GET /models 200' in line
               for line in lines_of(output))
    assert any(line.endswith(' INFO Worker ready') or 'Goin' in line
               for line in lines_of(output))  # outside a request: no id


def test_json_logs_parse_line_by_line_and_never_hold_the_token(tmp_path):
    token = 'json-log-secret-' + uuid.uuid4().hex
    with Process(tmp_path, '--log-format', 'json', '--access-log',
                 env={'BTF_TOKEN': token}) as p:
        assert p.get(f'/reset?token={token}', headers={'X-Request-ID': 'j-1'}).status == 200
        assert p.get('/reset', headers={'X-Request-ID': 'j-2'}).status == 401
        assert p.post('/predict', {'image': DIGIT}, headers={'X-Request-ID': 'j-3'}).status == 200
    output = p.output()
    assert token not in output
    records = [json.loads(line) for line in lines_of(output)]  # every line is one object
    assert all({'time', 'level', 'request_id', 'message'} <= set(r) for r in records)
    by_id = {}
    for record in records:
        by_id.setdefault(record['request_id'], []).append(record)
    assert any('live net reset' in r['message'] for r in by_id['j-1'])
    access = [r for r in by_id['j-3'] if 'duration_ms' in r]
    assert len(access) == 1 and access[0]['route'] == '/predict' and access[0]['status'] == 200
    assert access[0]['duration_ms'] > 0
    assert [r['status'] for r in by_id['j-2'] if 'status' in r] == [401]
    assert any(r['message'].startswith('Sanic') or 'Goin' in r['message']
               for r in by_id.get('-', [])), 'start-up lines are JSON too'


# ---------------------------------------------------------------------------------------
# Graceful shutdown.

def test_graceful_timeout_comes_from_the_settings(serve):
    with serve(graceful_timeout=4.5) as s:
        assert s.app.config.GRACEFUL_SHUTDOWN_TIMEOUT == 4.5


@pytest.mark.parametrize('workers', ['1', '2'])
def test_a_stop_in_the_first_instants_ends_the_server_cleanly(tmp_path, workers):
    """Ctrl-C or SIGTERM as soon as /health answers: the answering process is installing
    its signal handlers, and with --workers 2 the other one still starts. Sanic lost such
    a signal (the server served on), or a starting worker died of it unacknowledged and
    the main process waited 30 s, then killed them all (service.app.stop_cleanly)."""
    for k, sent in enumerate([signal.SIGINT, signal.SIGTERM, signal.SIGINT, signal.SIGINT]):
        (tmp_path / str(k)).mkdir()
        p = Process(tmp_path / str(k), '--workers', workers)
        p.process.send_signal(sent)
        try:
            p.process.wait(60)  # never needed: a server that lost the signal fails here
        finally:
            p.stop()
        assert p.process.returncode == 0, (sent, p.output()[-3000:])
        assert 'Killing' not in p.output() and 'acknowledged' not in p.output()


def test_sigterm_ends_streams_stops_training_and_keeps_the_live_net(tmp_path, data_file):
    with Process(tmp_path, '--data', str(data_file), '--graceful-timeout', '5') as p:
        live = p.state / 'live.npz'
        before = file_digest(live)
        events, ended, trained = [], threading.Event(), {}

        def listen():
            conn = http.client.HTTPConnection('127.0.0.1', p.port, timeout=60)
            conn.request('GET', '/train/events')
            for line in conn.getresponse():
                events.append(line)
            ended.set()

        def train():
            try:
                trained['answer'] = p.post('/train', {'epochs': 100}, timeout=60)
            except (OSError, http.client.HTTPException) as e:
                trained['error'] = e

        threads = [threading.Thread(target=listen, daemon=True),
                   threading.Thread(target=train, daemon=True)]
        for thread in threads:
            thread.start()
        wait_for(lambda: p.get('/train/status').json['history'], 'an epoch to end')
        p.process.send_signal(signal.SIGTERM)
        p.process.wait(15)
        assert ended.wait(5), 'the event stream did not end'
        for thread in threads:
            thread.join(10)
    # The training was stopped, not waited for: its request was answered 503 (below), and
    # the process ended within its --graceful-timeout (wait(15) above).
    assert p.process.returncode == 0, p.output()[-3000:]
    assert file_digest(live) == before  # the net of before the job, whole
    assert not list(p.state.glob('.*.tmp'))
    assert trained['answer'].status == 503, trained  # answered before the connection closed
    assert 'shutting down' in trained['answer'].json['error']
    assert any(b'event: epoch' in line for line in events)


def test_ctrl_c_in_a_terminal_stops_a_training_after_its_batch(tmp_path, data_file):
    """Ctrl-C in a terminal signals the whole process group, the training process too: it
    died of KeyboardInterrupt mid-batch (a traceback, and /train a 500 "ended unexpectedly")
    instead of stopping after its batch as the shutdown asks it to."""
    with Process(tmp_path, '--data', str(data_file)) as p:
        trained = {}

        def train():
            trained['answer'] = p.post('/train', {'epochs': 100}, timeout=60)

        thread = threading.Thread(target=train, daemon=True)
        thread.start()
        wait_for(lambda: p.get('/train/status').json['history'], 'an epoch to end')
        os.killpg(p.process.pid, signal.SIGINT)  # the terminal's group: every process
        p.process.wait(30)
        thread.join(10)
    assert p.process.returncode == 0, p.output()[-3000:]
    assert trained['answer'].status == 503, (trained, p.output()[-3000:])
    assert 'shutting down' in trained['answer'].json['error']
    assert 'KeyboardInterrupt' not in p.output()


# ---------------------------------------------------------------------------------------
# The container runs what `make run` runs.

def dockerfile():
    """{instruction: [its arguments, ...]} of the Dockerfile, continuation lines joined."""
    text = (ROOT / 'Dockerfile').read_text().replace('\\\n', ' ')
    found = {}
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith('#'):
            word, _, rest = line.strip().partition(' ')
            found.setdefault(word.upper(), []).append(rest.strip())
    return found


def make_run():
    """The arguments of server.py in the Makefile's run target, its variables' defaults in."""
    text = (ROOT / 'Makefile').read_text()
    defaults = dict(re.findall(r'^(\w+) \?= (.*)$', text, re.M))
    recipe = re.search(r'^run:.*\n((?:\t.*\n)+)', text, re.M).group(1)
    line = next(line for line in recipe.splitlines() if 'server.py' in line)
    line = re.sub(r'\$\((\w+)\)', lambda m: defaults.get(m.group(1), m.group(0)), line)
    words = shlex.split(line)
    return words[words.index('server.py') + 1:]


def test_the_image_runs_what_make_run_runs():
    docker = dockerfile()
    entry = json.loads(docker['ENTRYPOINT'][-1])
    command = json.loads(docker['CMD'][-1])
    assert entry == ['python', 'server.py']
    made = make_run()
    assert made[:2] == ['--host', '127.0.0.1'] and '--port' in made
    # The flags `make run` gives are all given, the port the same; the host is every
    # interface of the container.
    assert {w for w in made if w.startswith('--')} <= {w for w in command if w.startswith('--')}
    image = server.parse(command, environ={})
    local = server.parse(made, environ={})
    assert image.port == local.port == 8000
    # every interface, but not any Host: DNS rebinding is refused (test_attacks.py)
    assert image.host == '0.0.0.0' and image.token is None
    assert 'localhost' in image.hosts and '172.17.0.2' in image.hosts
    assert 'evil.example' not in image.hosts
    named = server.parse(command, environ={'BTF_ALLOWED_HOSTS': 'digits.example.org'})
    assert 'digits.example.org' in named.hosts and 'evil.example' not in named.hosts
    assert str(image.state_dir) == '/data/state' and docker['VOLUME'] == ['/data/state']
    assert docker['EXPOSE'] == [str(image.port)]
    assert f'http://127.0.0.1:{image.port}/health/ready' in docker['HEALTHCHECK'][0]
    user = docker['USER'][-1]
    assert user not in ('root', '0') and f'useradd --create-home --uid 10001 {user}' in \
        ' '.join(docker['RUN'])
    assert docker['FROM'][0].startswith('python:3.11-slim')
    assert 'pip install .' in docker['RUN']


@pytest.mark.parametrize('name', ['Dockerfile', 'compose.yaml'])
def test_container_files_parse(name):
    if name == 'compose.yaml':
        import yaml
        compose = yaml.safe_load((ROOT / name).read_text())
        serve = compose['services']['server']
        assert serve['build'] == '.' and 'state:/data/state' in serve['volumes']
        assert serve['ports'] == ['127.0.0.1:8000:8000']
        # the state in the compose file's PostgreSQL, as --database would put it
        database = compose['services']['postgres']
        assert serve['environment']['DATABASE_URL'].startswith('postgresql://')
        assert serve['environment']['DATABASE_URL'].split('@')[1].startswith('postgres:')
        assert database['image'].startswith('postgres:') and 'postgres' in serve['depends_on']
    else:
        assert dockerfile()['WORKDIR'] == ['/app']


def test_counted_answers_stay_bounded_whatever_the_interval():
    """Answers are counted in memory between writes to the metrics: at most PENDING of them,
    however long --metrics-interval is; none is lost on the way."""
    from types import SimpleNamespace

    from sanic.response import HTTPResponse

    from service import Settings
    from service import observability as obs
    metrics = obs.Metrics()
    tracker = obs.Tracker(Settings(metrics_interval=3600), metrics)
    route = SimpleNamespace(path='predict')
    for _ in range(obs.PENDING + 5):
        request = SimpleNamespace(_id=None, ctx=SimpleNamespace(), route=route, method='POST',
                                  path='/predict', headers={})
        tracker.start(request)
        tracker.finish(request, HTTPResponse(b'{}', status=200))
    assert len(metrics.answered) == 5
    text = metrics.exposition().decode()
    assert value(text, 'btf_request_duration_seconds_count', route='/predict', method='POST',
                 status='200') == obs.PENDING + 5


# ---------------------------------------------------------------------------------------
# The log redactor (service/logs.py): linear, and one record one line.

def redacted(message, token=None, exc_info=None):
    from service import logs
    record = logging.LogRecord('t', logging.INFO, __file__, 1, message, (), exc_info)
    logs.Redact(token).filter(record)
    return record.getMessage()


def test_the_redactor_costs_time_linear_in_the_line():
    """Issue #20: each "://" of a line made the pattern scan to its end and back (a quadratic
    cost: 4 times the line was 16 times the time). Compared with itself, not a clock."""
    def cost(n):
        line = '/\x1b' + '://a:' * n
        best = float('inf')
        for _ in range(3):
            started = time.perf_counter()
            redacted(line)
            best = min(best, time.perf_counter() - started)
        return best
    cost(100)  # warm
    small, large = cost(2000), cost(8000)
    assert large < 8 * small, (small, large)


def test_the_redactor_keeps_secrets_out_and_escapes_control_characters():
    assert redacted('postgresql://btf:hunter2@db:5432/x') == 'postgresql://btf:<redacted>@db:5432/x'
    assert redacted('a://u:p@b c://v:q@d') == 'a://u:<redacted>@b c://v:<redacted>@d'
    assert redacted('http://host:8000/train?token=abc&x=1') == \
        'http://host:8000/train?token=<redacted>&x=1'
    assert redacted('Authorization: Bearer abc, next') == 'Authorization: Bearer <redacted>, next'
    assert redacted('the token is T0k3n', token='T0k3n') == 'the token is <redacted>'
    assert redacted('GET /\x1b[31mred\x9b\x7f\u2028\r\nINFO forged') == \
        'GET /\\x1b[31mred\\x9b\\x7f\\u2028\\r\\nINFO forged'
    assert len(redacted('x' * 100_000)) < 2100
    try:
        raise ValueError('bad \x1b value')
    except ValueError:
        text = redacted('failed', exc_info=sys.exc_info())
    assert text.startswith('failed\nTraceback') and '\x1b' not in text and '\\x1b' in text
