"""How many drawings one client may store: a token bucket (``--sample-rate`` per second on
average, ``--sample-burst`` at once) and a count per hour (``--samples-per-hour``), per client
address and worker (``app.ctx.posting``); past either, a 429 with Retry-After. The token
holder is exempt. A client is never judged by its other drawings: these limits bound the load
of a flood, not what a drawing may teach (judge.py does that, drawing by drawing)."""
import math
import time

from .errors import TooMany

HOUR = 3600.0
KEPT = 10_000  # addresses remembered per worker before the idle ones are forgotten


class Poster:
    """One client address's budget: a token bucket and an hourly count."""

    def __init__(self, burst, now):
        self.tokens, self.last = float(burst), now
        self.window, self.count = now, 0

    def take(self, rate, burst, per_hour, now):
        """Spend one drawing's worth, or raise TooMany naming the limit."""
        self.tokens = min(burst, self.tokens + (now - self.last) * rate)
        self.last = now
        if now - self.window >= HOUR:
            self.window, self.count = now, 0
        if self.count >= per_hour:
            wait = self.window + HOUR - now
            raise TooMany(f'this address stored {self.count} drawings in the last hour, the '
                          f'most it may (--samples-per-hour {per_hour}); try again in '
                          f'{math.ceil(wait / 60)} minutes.', retry_after=math.ceil(wait))
        if self.tokens < 1:
            wait = (1 - self.tokens) / rate
            raise TooMany(f'this address stores drawings faster than this server takes them '
                          f'(--sample-rate {rate:g} per second, --sample-burst {burst} at '
                          f'once); try again in {wait:.1f} seconds.',
                          retry_after=max(1, math.ceil(wait)))
        self.tokens -= 1
        self.count += 1


def take_sample_slot(app, address):
    """Count one drawing stored by ``address`` against its limits (429 past one)."""
    ctx, settings = app.ctx, app.ctx.settings
    now = time.monotonic()
    poster = ctx.posting.get(address)
    if poster is None:
        if len(ctx.posting) >= KEPT:  # bounded: the least recently seen half goes
            for old in sorted(ctx.posting, key=lambda a: ctx.posting[a].last)[:KEPT // 2]:
                del ctx.posting[old]
        poster = ctx.posting[address] = Poster(settings.sample_burst, now)
    poster.take(settings.sample_rate, settings.sample_burst, settings.samples_per_hour, now)
