"""Logging for the service: one format, secrets never written, and one record one line.

Any log line, ours or a library's, passes through ``Redact`` on the root handlers: the token's
value, "?token=..." / "&token=..." in a URL, "Bearer ..." and a database URL's password become
"<redacted>"; a private net's name in a URL ("/nets/<name>", "net=<name>": the name is the
net's key) keeps its first six characters only. What a client sent may reach a message (a
URL Sanic could not parse), so the message is then cut to MESSAGE_CHARS and every character
that is not printable (control characters, C1, line and paragraph separators) is written as
an escape: nothing a client sends can move a terminal's cursor or start a log line of its
own. A traceback keeps its lines.

Every step costs time linear in the line's length: the patterns below have no unbounded
quantifier that can give back what it took and try again (a URL's password is matched up to
the first "@" or space, and only then is the "@" asked for).
"""
import logging
import re

FORMAT = '%(asctime)s %(process)d %(levelname)s %(message)s'
MESSAGE_CHARS = 2000  # of a message, tracebacks aside
NEWLINE = '\n'
_SECRETS = re.compile(r'((?:[?&;]|\b)(?:token|password)=)[^&\s\'"]*|(Bearer\s+)[^\s\'",]+',
                      re.IGNORECASE)
# "://user:password@": the password runs to the first "@" or space, taken whole; without an
# "@" there the match keeps the text as it is (and no later "://" up to that space could end
# in an "@" either).
_URL_PASSWORD = re.compile(r'(://[^:/@\s]+:)([^@\s]*)(@?)')


# A private net's name (store.new_net_name: 22 characters) in a path or a query.
_NET_NAME = re.compile(r'((?:[?&;]net=|/nets/)[A-Za-z0-9_-]{6})[A-Za-z0-9_-]{16}(?![A-Za-z0-9_-])')


def _keep(match):
    return next(group for group in match.groups() if group is not None) + '<redacted>'


def _password(match):
    return match[1] + '<redacted>@' if match[3] else match[0]


def escape(text, keep=''):
    """``text`` with every character that is not printable (but those in ``keep``) written as
    Python writes it in a string literal: ESC as \\x1b, a newline as \\n."""
    if text.isprintable():
        return text
    return ''.join(c if c.isprintable() or c in keep else c.encode('unicode_escape').decode()
                   for c in text)


def clip(text, most=MESSAGE_CHARS):
    return text if len(text) <= most else f'{text[:most]}... ({len(text)} characters)'


class Redact(logging.Filter):
    """Removes secrets from a record's message (its arguments are merged in first), then
    clips and escapes it, once per record whatever the number of handlers."""

    def __init__(self, token=None):
        super().__init__()
        self.token = token

    def clean(self, text):
        text = _SECRETS.sub(_keep, _URL_PASSWORD.sub(_password, text))
        text = _NET_NAME.sub(r'\1...', text)
        return text.replace(self.token, '<redacted>') if self.token else text

    def filter(self, record):
        if record.__dict__.get('redacted'):
            return True
        record.redacted = True
        message = record.getMessage()
        clean = escape(clip(self.clean(message)))
        if record.exc_info and record.exc_info[1] is not None:
            # A traceback's last line repeats the exception's message: format it here, clean.
            text = logging.Formatter().formatException(record.exc_info)
            clean = f'{clean}\n{escape(self.clean(text), keep=NEWLINE)}'
            record.exc_info, record.exc_text = None, None
        if clean != message or record.args:
            record.msg, record.args = clean, ()
        return True


def configure(token=None, level=logging.INFO):
    """Log to stderr in one format, every handler behind Redact (idempotent)."""
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(level=level, format=FORMAT)
    root.setLevel(level)
    for logger in (root, *(logging.getLogger(n) for n in ('sanic.root', 'sanic.error',
                                                          'sanic.access', 'sanic.server'))):
        for handler in logger.handlers:
            for old in [f for f in handler.filters if isinstance(f, Redact)]:
                handler.removeFilter(old)
            handler.addFilter(Redact(token))
