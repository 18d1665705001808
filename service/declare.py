"""A route described once, beside its handler: ``@documented(build)`` under the route's
``@bp.<method>(...)`` lines gives the handler its OpenAPI operation; ``build(ctx)`` returns an
operation (for each of the route's methods) or ``{method: operation}``. service/openapi.py
calls it for each of the route's paths (``ctx.path``) when it assembles /openapi.json. Here
too are the pieces several routes' operations share."""

NUMBER = {'type': 'number'}
INT = {'type': 'integer'}
SIZES = {'type': 'array', 'items': INT}
# A 12x12 PNG of a vertical stroke (a "1"), so that the example request is a real one.
EXAMPLE_PNG = ('data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAwAAAAMCAAAAABzHgM7AAAAHElEQVQI'
               '12NgAIP/YJIRxgYxmBiQAL04DMjOAQAqGAMSsSjLHgAAAABJRU5ErkJggg==')
UNSURE = {'type': 'string', 'nullable': True,
          'description': 'why the answer should not be trusted (docs/api.md, "Not sure"), '
                         'or null'}
NET = {'type': 'string', 'default': 'live', 'example': 'live',
       'description': 'the net: "live" (the shared one) or a private net\'s name (POST /nets)'}
NET_QUERY = {'name': 'net', 'in': 'query', 'required': False, 'schema': NET}
TOKEN_SECURITY = [{'bearer': []}, {'token': []}]


def answer(schema, description='OK'):
    return {'description': description, 'content': {'application/json': {'schema': schema}}}


def ref(name):
    return {'$ref': f'#/components/schemas/{name}'}


def error(description):
    return answer(ref('Error'), description)


def request_body(schema, required=True):
    return {'required': required, 'content': {'application/json': {'schema': schema}}}


OK_TEXT = {'description': 'done', 'content': {'text/plain': {'schema': {'type': 'string',
                                                                         'enum': ['OK']}}}}
BUSY = error('a training job is running (the body also has "status", as /train/status)')
NO_NET = error('no net of that name')
NOT_JSON = error('a body that is not application/json')


def documented(build):
    """Mark a handler with its OpenAPI declaration, ``build(ctx)``."""
    def mark(handler):
        handler.openapi = build
        return handler
    return mark


class Context:
    """What declarations read: the server's ``settings``, its pretrained ``versions``, the
    ``path`` being described (a handler may serve several), the guard of the routes that
    change state, and the component schemas declared so far (``schema``)."""

    def __init__(self, settings, versions):
        self.settings, self.versions, self.path = settings, list(versions), None
        self.schemas = {}
        # With a token, the routes that change the live net take it either way; without one,
        # they refuse cross-site requests.
        self.guarded = {'security': TOKEN_SECURITY,
                        'responses': {'401': error('no token, or a wrong one')}} \
            if settings.token is not None else \
            {'responses': {'403': error('a cross-site request (docs/operations.md, access)')}}
        self.changing = {'415': error('a POST body that is not application/json'),
                         '503': error('the new net could not be saved (storage unreachable)'),
                         '507': error('the disk is full: the new net could not be saved')}
        # The routes that act on a net named in the request (guard.changes_a_net): the live
        # net's need the token, a private net's its name; cross-site requests are refused.
        self.by_name = {'403': error('a cross-site request'), **(
            {'401': error('no token, or a wrong one (the live net)')}
            if settings.token is not None else {})}
        self.pretrained = {'type': 'integer', 'enum': [0, *self.versions],
                           'description': 'a version listed by /models; absent or 0 means '
                                          'the live net'}

    @staticmethod
    def security(guard):
        """The "security" of an operation behind ``guard`` (none without a token)."""
        return {'security': guard['security']} if 'security' in guard else {}

    def schema(self, name, schema):
        """``schema`` as the component ``name``; a reference to it."""
        if self.schemas.setdefault(name, schema) != schema:
            raise ValueError(f'two different schemas are declared as {name!r}')
        return ref(name)
