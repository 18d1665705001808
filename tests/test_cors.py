"""service/cors.py: sanic-cors's headers, remembered per kind of request, never more of them
than REMEMBERED (the answers' headers through the real server: test_hardening.py)."""
import itertools
import random
from types import SimpleNamespace

from sanic import Sanic
from sanic.compat import Header
from sanic.response import HTTPResponse
from sanic_cors.core import get_cors_headers

from service.cors import REMEMBERED, Cors

METHODS = ['GET', 'HEAD', 'POST', 'DELETE', 'OPTIONS']
ORIGINS = [None, 'http://a.example', 'http://b.example', 'null']


def request(method, origin=None, asked=None, asked_headers=None, vary=None):
    headers = Header()
    for name, value in (('Origin', origin), ('Access-Control-Request-Method', asked),
                        ('Access-Control-Request-Headers', asked_headers)):
        if value is not None:
            headers.add(name, value)
    return SimpleNamespace(method=method, headers=headers)


def cases():
    for method, origin, asked, asked_headers in itertools.product(
            ['GET', 'POST', 'OPTIONS'], ORIGINS, [None, 'POST', 'PUT'],
            [None, 'content-type', 'authorization, content-type']):
        yield request(method, origin, asked, asked_headers)


def test_remembered_headers_are_sanic_cors_headers_for_every_kind_of_request():
    random.seed(0)
    for n, (origins, wildcard) in enumerate([('*', True), (['http://a.example'], False),
                                             (['http://a.example', 'http://b.example'], False)]):
        app = Sanic(f'cors_test_{n}')
        cors = Cors(app, origins=origins, send_wildcard=wildcard, always_send=wildcard,
                    max_age=600, methods=METHODS)
        every = list(cases()) * 3
        random.shuffle(every)  # remembered answers come back in any order
        for r in every:
            expected = tuple(get_cors_headers(cors.options, r.headers, r.method).items())
            assert cors.headers(r) == expected, (r.method, dict(r.headers))
        if wildcard:
            assert ('Access-Control-Allow-Origin', '*') in cors.headers(request('GET'))
        else:
            assert cors.headers(request('GET', 'http://c.example')) == ()


def test_vary_is_joined_to_the_answers_own():
    cors = Cors(Sanic('cors_vary'), origins=['http://a.example', 'http://b.example'],
                methods=METHODS)
    answer = HTTPResponse(headers={'Vary': 'Accept-Encoding'})
    cors.apply(request('GET', 'http://a.example'), answer)
    assert answer.headers['Access-Control-Allow-Origin'] == 'http://a.example'
    assert answer.headers.getall('vary') == ['Accept-Encoding, Origin']


def test_varied_origins_are_bounded():
    cors = Cors(Sanic('cors_bounded'), origins='*', send_wildcard=True, always_send=True,
                methods=METHODS)
    for k in range(5 * REMEMBERED):
        assert cors.headers(request('GET', f'http://{k}.example'))
        assert len(cors.known) <= REMEMBERED
