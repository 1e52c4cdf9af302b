"""What every request and answer of the web server goes through: the client's address, the rate
limit, the security headers, plain error pages and the one log line.

- **Client address**: the peer's address, unless the peer is a trusted proxy
  (`[http] trusted_proxies`), in which case the right-most address of X-Forwarded-For that is not
  itself a trusted proxy (the left-most entries are whatever the client chose to send).
- **Rate limit**: a token bucket per client address, `[http] rate_limit_per_min` requests a
  minute with as large a burst; beyond it 429 with Retry-After (RFC 6585 §4). /healthz is exempt.
- **Headers** on every answer, errors included: a strict CSP (see `pages`), no framing, no
  referrer (the token is in the URL), no sniffing, no caching (a page shows a customer's choices).
- **Errors** are plain pages with no traceback and no hint about why a token was refused.
- **Logging**: one line per request with the route (never the path: it holds the token), the
  customer id when known, the outcome and the status. Never an address or a token.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import time
from collections.abc import Awaitable, Callable, Sequence

from aiohttp import web
from aiohttp.typedefs import Middleware

from mailer.clock import Clock
from mailer.errors import Unavailable

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
ErrorPage = Callable[[web.Request, int], web.Response]

# Keys a handler sets on the request for the log line.
CUSTOMER = web.RequestKey("mailer.customer_id", int)
OUTCOME = web.RequestKey("mailer.outcome", str)

_Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def security_headers(content_security_policy: str) -> dict[str, str]:
    return {
        "Content-Security-Policy": content_security_policy,
        "X-Frame-Options": "DENY",
        "Referrer-Policy": "no-referrer",
        "X-Content-Type-Options": "nosniff",
        "Cache-Control": "no-store",
        "Cross-Origin-Opener-Policy": "same-origin",
        "Cross-Origin-Resource-Policy": "same-origin",
    }


class ClientAddress:
    """Finds the client's address, believing X-Forwarded-For only from trusted proxies."""

    def __init__(self, trusted_proxies: Sequence[str]) -> None:
        self._trusted: tuple[_Network, ...] = tuple(
            ipaddress.ip_network(p, strict=False) for p in trusted_proxies)

    def _is_trusted(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address.strip())
        except ValueError:
            return False
        return any(ip in network for network in self._trusted)

    def of(self, request: web.Request) -> str:
        peer = request.remote or ""
        if not self._trusted or not self._is_trusted(peer):
            return peer
        hops = [h.strip() for v in request.headers.getall("X-Forwarded-For", [])
                for h in v.split(",") if h.strip()]
        for hop in reversed(hops):
            if not self._is_trusted(hop):
                return hop
        return hops[0] if hops else peer


class RateLimiter:
    """Token buckets per client address: `per_min` requests a minute, bursts of `per_min`."""

    _MAX_CLIENTS = 50_000

    def __init__(self, per_min: int, clock: Clock) -> None:
        self._capacity = float(per_min)
        self._rate_per_s = per_min / 60.0
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # address -> (tokens, at)

    def retry_after_s(self, client: str) -> int:
        """0 if the request may go ahead (and it is counted), else seconds to wait."""
        if self._capacity <= 0:
            return 0
        now = self._clock.monotonic()
        tokens, at = self._buckets.get(client, (self._capacity, now))
        tokens = min(self._capacity, tokens + (now - at) * self._rate_per_s)
        if tokens < 1.0:
            self._buckets[client] = (tokens, now)
            return max(1, math.ceil((1.0 - tokens) / self._rate_per_s))
        if len(self._buckets) >= self._MAX_CLIENTS and client not in self._buckets:
            self._forget_idle(now)
        self._buckets[client] = (tokens - 1.0, now)
        return 0

    def _forget_idle(self, now: float) -> None:
        # A bucket that has refilled completely is the same as no bucket.
        full_after_s = self._capacity / self._rate_per_s
        self._buckets = {k: v for k, v in self._buckets.items() if now - v[1] < full_after_s}


def make_middlewares(
    *, client_address: ClientAddress, limiter: RateLimiter, error_page: ErrorPage,
    exempt: frozenset[str],
) -> list[Middleware]:
    """The middlewares, outermost first: log and turn errors into pages, then rate limit."""

    @web.middleware
    async def log_and_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
        started = time.perf_counter()
        log.debug("%s %s started", request.method, _route(request))
        response: web.StreamResponse
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            if exc.status < 400:  # pragma: no cover - no handler redirects
                raise
            response = error_page(request, exc.status)
            for header in ("Allow", "Retry-After"):
                if header in exc.headers:
                    response.headers[header] = exc.headers[header]
            request.setdefault(OUTCOME, exc.reason.lower())
        except Unavailable as exc:
            log.warning("web: %s", exc)
            response = error_page(request, 503)
            request[OUTCOME] = "database unavailable"
        except Exception:
            log.exception("web: %s %s failed", request.method, _route(request))
            response = error_page(request, 500)
            request[OUTCOME] = "error"
        log.info("%s %s -> %d customer=%s outcome=%s %.1fms", request.method, _route(request),
                 response.status, request.get(CUSTOMER, "-"), request.get(OUTCOME, "-"),
                 (time.perf_counter() - started) * 1000)
        return response

    @web.middleware
    async def rate_limit(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path not in exempt:
            wait_s = limiter.retry_after_s(client_address.of(request))
            if wait_s:
                request[OUTCOME] = "rate limited"
                raise web.HTTPTooManyRequests(headers={"Retry-After": str(wait_s)})
        return await handler(request)

    return [log_and_errors, rate_limit]


def _route(request: web.Request) -> str:
    """The route's pattern (`/unsubscribe/{token}`), never the path itself."""
    info = request.match_info.route.resource
    return info.canonical if info is not None else "(no route)"
