"""Who may do what.

- Every route: a request whose Host is not a loopback name, one of --allowed-hosts or (when
  not listening on loopback) an IP address is refused: a page on evil.example whose name was
  made to resolve to this server (DNS rebinding) reaches nothing. A server that answers any
  Host ('*') must have a token (Settings refuses to be built otherwise).
- Routes that change state carry ``@changes_state`` (and the /samples routes, which hold
  users' drawings, ``@holds_user_data``, the same guard): with a token configured they need it
  ("Authorization: Bearer <token>" or ?token=); without one, a request a browser marks as
  coming from another site (Sec-Fetch-Site, or an Origin that is neither the server's own nor
  listed in --cors-origins) is refused, and a POST body must be application/json (a page
  elsewhere cannot send that without a preflight). The address bar, curl and the page itself
  keep working. Reads and /predict stay open to every origin.
- A private net's name is its capability: the routes that change or read it need the name,
  not the token; the cross-site rule still holds for them (unless the token is sent).
"""
import functools
import hmac
import re

from sanic.exceptions import Unauthorized

from .errors import BadRequest, Forbidden, clip
from .parsing import net_name, require_json
from .store import LIVE

# A Host header: a name or an IPv4 address, or an IPv6 address in brackets, then at most a
# port of digits. Anything else ("[::1]evil.example", "localhost:evil") is kept whole, and
# so matches no name answered: a proxy reading it otherwise routes what was never checked.
_HOST = re.compile(r'\[([0-9a-f:.]+)\](?::[0-9]*)?|([^:\[\]]*)(?::[0-9]*)?')


def host_name(request):
    """The Host header's name, lower case, without the port."""
    host = request.headers.get('host', '').strip().lower()
    match = _HOST.fullmatch(host)
    return host if match is None else match[1] if match[1] is not None else match[2]


def check_host(request):
    """Request middleware: refuse a Host this server does not answer to, and two Host
    headers (a proxy that reads the last one would route what was checked as the first)."""
    given = len(request.headers.getall('host', ()))
    if given > 1:
        raise BadRequest(f'a request has one Host header; this one has {given}.')
    hosts = request.app.ctx.settings.hosts
    if hosts is None:
        return
    name = host_name(request)
    if name and name not in hosts:  # browsers always send Host; a bare client may not
        raise Forbidden(f'this server answers to the host names {hosts}, not '
                        f'{clip(name)!r}: use one of them (or start the server with '
                        '--allowed-hosts).')


def token_given(request, token):
    """True for the right token, else why not ('no token was given' / 'the token is wrong')."""
    scheme, _, given = request.headers.get('authorization', '').partition(' ')
    if scheme.lower() != 'bearer':
        given = request.get_args(keep_blank_values=True).get('token')
    if given is None:
        return 'no token was given'
    if hmac.compare_digest(given.strip().encode(errors='surrogatepass'),
                           token.encode(errors='surrogatepass')):
        return True
    return 'the token is wrong'


def cross_site(request):
    """Why a browser marked this request as coming from another site, or None."""
    settings = request.app.ctx.settings
    origin = request.headers.get('origin')
    listed = settings.cors_origins != '*' and origin in settings.cors_origins
    if origin is not None and not listed:
        own = f'{request.scheme}://{request.headers.get("host", "")}'.lower()
        if origin.lower() != own:
            return f'it comes from the origin {origin[:80]!r}'
    site = request.headers.get('sec-fetch-site', '').lower()
    if site in ('cross-site', 'same-site') and not listed:
        return f'the browser marked it {site}'
    return None


def guarded(what, net_in_path=False, private=False, body_types=()):
    """The one guard of the routes that change state or hold users' data (see the module's
    docstring); ``what`` ends the messages' "<path> ..." (e.g. 'changes the live net').

    A route that acts on one net (``net_in_path``: the URL's ``name``, else the request's
    "net") guards the live net so, and a private net by its name alone: whoever holds the name
    may use and change it, with no token, but a page on another site still may not (unless it
    sends the token or its origin is listed). ``private``: the route acts on no net yet (it
    creates one): guarded as a private net. ``body_types``: the Content-Types a body may
    have besides JSON (each one a browser cannot send cross-site without a preflight)."""

    def decorate(handler):
        @functools.wraps(handler)
        async def guarded_handler(request, *args, **kwargs):
            settings = request.app.ctx.settings
            token = settings.token
            mine = private or \
                net_name(request, kwargs.get('name') if net_in_path else None) != LIVE
            subject = f'{request.path} {what}' if not mine else \
                f'{request.path} changes or reads a private net'
            given = token_given(request, token) if token is not None else None
            if token is not None and not mine and given is not True:
                raise Unauthorized(f"{subject} and needs the server's token ({given}): send "
                                   '"Authorization: Bearer <token>" or add ?token=<token>.',
                                   scheme='Bearer', realm='better-tensorflow')
            if given is not True:
                why = cross_site(request)
                if why is not None:
                    raise Forbidden(f'{subject}, and {why}: a page on another site may not use '
                                    'it. Start the server with a token (BTF_TOKEN) and send it, '
                                    'or list that origin with --cors-origins.')
            if request.method in ('POST', 'PUT', 'PATCH', 'DELETE') and request.body:
                # a page elsewhere cannot send it without a preflight
                require_json(request, also=body_types)
            return await handler(request, *args, **kwargs)

        guarded_handler.guarded = True
        return guarded_handler
    return decorate


changes_state = guarded('changes the live net')
holds_user_data = guarded("holds users' drawings")
changes_a_net = guarded('changes a net', net_in_path=True)
creates_a_net = guarded('creates a net', private=True)
# POST /nets/import's body is the NPZ itself: application/octet-stream is not one of the
# types a page on another site may send without a preflight (text/plain, form data), so it
# is as safe as JSON here, and a model file travels as the bytes it is.
imports_a_net = guarded('creates a net', private=True, body_types=('application/octet-stream',))
