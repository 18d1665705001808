"""Request parsing: every check names the bad value and what is expected, quoting at most a
short prefix of it, and no body costs more to parse than its size allows; and the JSON of
answers holding numpy arrays (``dump_numpy``)."""
import json
import re

import orjson

from .errors import BadRequest, UnsupportedMediaType
from .nets import is_int
from .store import LIVE

SHOWN = 60  # characters of a bad value quoted in an error message


def json_body(request, allowed, example):
    """The JSON object in the body (None when the body is empty), with only ``allowed`` keys.

    The service's bodies are small objects (an image is one string), so a body with more
    brackets and commas than ``max_json_values`` is refused before it is parsed: a 16 MiB
    ``[[],[],...]`` would otherwise hold the event loop for seconds.
    """
    parsed = parsed_body(request, example)
    if parsed is None:
        return None
    unknown = sorted(set(parsed) - set(allowed))
    if unknown:
        listed = [key[:SHOWN] for key in unknown[:5]] + (['...'] if len(unknown) > 5 else [])
        raise BadRequest(f'unknown field(s) {listed}: the accepted fields are '
                         f'{list(allowed)}.')
    return parsed


def parsed_body(request, example='{...}'):
    """The body's JSON object, parsed once per request (the guard and the handler both read
    it); None when the body is empty."""
    if 'json' in request.ctx.__dict__:
        return request.ctx.json
    body = request.body
    if not body:
        request.ctx.json = None
        return None
    require_json(request)
    limit = request.app.ctx.settings.max_json_values
    values = body.count(b'[') + body.count(b'{') + body.count(b',')
    if values > limit:
        raise BadRequest(f'the body is JSON nested too deeply or with too many values ({values} '
                         f'brackets and commas, at most {limit}); expected an object like '
                         f'{example}.')
    try:
        parsed = json.loads(body)
    except (ValueError, UnicodeDecodeError) as e:
        raise BadRequest(f'the body is not valid JSON ({shown(str(e), quote=False)}); expected '
                         f'an object like {example}.') from None
    except RecursionError:
        raise BadRequest(f'the body is JSON nested too deeply; expected an object like '
                         f'{example}.') from None
    if not isinstance(parsed, dict):
        raise BadRequest(f'the body must be a JSON object like {example}, got {shown(parsed)}.')
    request.ctx.json = parsed
    return parsed


def net_name(request, path=None):
    """The net a request names: the URL's (``path``), else "net" in its JSON body, else
    ?net=, else the shared net, "live". 400 when it is not a string; whether it names a net is
    the registry's to say (404)."""
    if path is not None:
        return path
    body = parsed_body(request) if request.method in ('POST', 'PUT', 'PATCH', 'DELETE') \
        else None
    if body is not None and 'net' in body:
        name = body['net']
    else:
        name = request.get_args(keep_blank_values=True).get('net', LIVE)
    if not isinstance(name, str):
        raise BadRequest(f'net must be a net\'s name (a string: "live", or the name POST /nets '
                         f'answered with), got {shown(name)}.')
    return name


def require_json(request, also=()):
    """The one rule for bodies (docs/api.md, "Bodies"): a route's JSON body comes as
    Content-Type: application/json (a charset may follow), else 415 naming what was sent.
    ``also``: other types a route takes (``None`` for no Content-Type at all)."""
    given = request.headers.get('content-type')
    kind = None if given is None else given.split(';')[0].strip().lower()
    if kind != 'application/json' and kind not in also:
        others = ''.join(f' (or {other})' for other in also if other is not None)
        raise UnsupportedMediaType(
            f'{request.path[:SHOWN]} takes a JSON body sent as Content-Type: application/json'
            f'{others}, got '
            f'{"no Content-Type" if given is None else "Content-Type " + shown(given)}.')


def shown(value, quote=True):
    """A value as JSON, cut to SHOWN characters, for error messages: never more than a
    prefix of it is ever encoded."""
    if not quote:
        text = str(value)
    elif isinstance(value, str):
        text = json.dumps(value[:SHOWN + 1])
    elif isinstance(value, (list, dict)):
        text = _prefix(value)
    else:
        try:
            text = json.dumps(value)
        except (ValueError, TypeError):
            text = repr(value)[:SHOWN + 1]
    return text if len(text) <= SHOWN else text[:SHOWN - 3] + '...'


def _prefix(value, budget=SHOWN + 1):
    """JSON of the first few items of a (nested) list or dict, up to ``budget`` characters."""
    if budget <= 0:
        return ''
    if isinstance(value, list):
        parts, used = [], 1
        for item in value:
            if used > budget:
                break
            part = _prefix(item, budget - used)
            parts.append(part)
            used += len(part) + 2
        return ('[' + ', '.join(parts) + ']')[:budget]
    if isinstance(value, dict):
        parts, used = [], 1
        for key, item in value.items():
            if used > budget:
                break
            part = json.dumps(str(key)[:budget]) + ': ' + _prefix(item, budget - used)
            parts.append(part)
            used += len(part) + 2
        return ('{' + ', '.join(parts) + '}')[:budget]
    if isinstance(value, str):
        return json.dumps(value[:budget])[:budget]
    try:
        return json.dumps(value)[:budget]
    except (ValueError, TypeError):
        return repr(value)[:budget]


def query_int(value):
    """A query-string value as an int when it is one (up to 9 digits), else unchanged."""
    return int(value) if isinstance(value, str) and re.fullmatch(r'[0-9]{1,9}', value) else value


def parse_epochs(value, maximum):
    if not is_int(value) or not 1 <= value <= maximum:
        raise BadRequest(f'epochs must be an integer from 1 to {maximum} (--max-epochs), got '
                         f'{shown(value)}.')
    return value


def dump_numpy(data):
    """JSON of data holding numpy arrays and floats, each number in the fewest digits that
    read back to the same value."""
    return orjson.dumps(data, option=orjson.OPT_SERIALIZE_NUMPY)
