"""Logging for the service: one format, and secrets never written.

Any log line, ours or a library's, passes through ``Redact`` on the root handlers: the token's
value, "?token=..." / "&token=..." in a URL, "Bearer ..." and a database URL's password become
"<redacted>".
"""
import logging
import re

FORMAT = '%(asctime)s %(process)d %(levelname)s %(message)s'
_SECRETS = re.compile(r'((?:[?&;]|\b)(?:token|password)=)[^&\s\'"]*|(Bearer\s+)[^\s\'",]+'
                      r'|(://[^:/@\s]+:)[^@\s]+(?=@)', re.IGNORECASE)


def _keep(match):
    return next(group for group in match.groups() if group is not None)


class Redact(logging.Filter):
    """Removes secrets from a record's message (its arguments are merged in first)."""

    def __init__(self, token=None):
        super().__init__()
        self.token = token

    def filter(self, record):
        message = record.getMessage()
        clean = _SECRETS.sub(lambda m: _keep(m) + '<redacted>', message)
        if self.token:
            clean = clean.replace(self.token, '<redacted>')
        if record.exc_info and record.exc_info[1] is not None:
            # A traceback's last line repeats the exception's message: format it here, clean.
            text = logging.Formatter().formatException(record.exc_info)
            text = _SECRETS.sub(lambda m: _keep(m) + '<redacted>', text)
            if self.token:
                text = text.replace(self.token, '<redacted>')
            clean, record.exc_info, record.exc_text = f'{clean}\n{text}', None, None
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
