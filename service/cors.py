"""CORS headers of every answer: sanic-cors's rules (its options and ``get_cors_headers``),
applied where every answer passes (``protocol.Request.respond``) and remembered per kind of
request.

sanic-cors's extension adds a request and a response middleware (Sanic dispatches two signals
for each, on every request), and its response middleware formats its options into a debug
message on every answer, logged or not: 6-10% of a /predict's CPU (docs/performance.md). The
headers depend only on the request's Origin headers and, for a preflight, on its
Access-Control-Request-Method and -Headers: they are worked out once per such combination
(at most REMEMBERED at a time; past it the memory starts again, so varied headers cost sanic-
cors's own work, never memory)."""
from sanic_cors.core import get_cors_headers, get_cors_options

REMEMBERED = 256
PREFLIGHT = ('access-control-request-method', 'access-control-request-headers')


class Cors:
    """The CORS headers sanic-cors's ``CORS(app, **options)`` would add to an answer."""

    def __init__(self, app, **options):
        self.options = get_cors_options(app, options)  # sanic-cors's defaults, then these
        self.known = {}

    def headers(self, request):
        """((name, value), ...) for ``request``."""
        given = request.headers
        preflight = request.method == 'OPTIONS'
        key = (tuple(given.getall('origin', ())), preflight,
               *(tuple(given.getall(name, ())) for name in PREFLIGHT if preflight))
        found = self.known.get(key)
        if found is None:
            if len(self.known) >= REMEMBERED:
                self.known.clear()
            found = self.known[key] = tuple(
                get_cors_headers(self.options, given, request.method).items())
        return found

    def apply(self, request, response):
        """Add them to ``response``, a Vary joined to the answer's own as sanic-cors does."""
        headers = response.headers
        for name, value in self.headers(request):
            if name.lower() == 'vary' and 'vary' in headers:
                headers['Vary'] = ', '.join([*headers.popall('vary'), value])
            else:
                headers.add(name, value)
