"""What every request and answer of the public listener goes through: the rate limits, plain
error pages and the one log line (the client's address and the security headers come from the
shared plumbing, `mailer.http`).

- **Rate limits** (RFC 6585 §4: 429 with Retry-After), by client (`mailer.http.client`: after
  trusted proxies, IPv6 by its /64), `[http] rate_limit_per_min` (0: none):
  - a request with a valid link token (signed by us, so from a message we sent) counts only
    against that link from that client: a mail provider posting RFC 8058 one-clicks for many
    customers from one shared address is never refused for the rate of the others;
  - a request with a token that does not verify counts against `BAD_TOKENS_PER_MIN` per client
    as well, a hard limit on guessing;
  - anything else counts against the client's own bucket. /healthz and /metrics are exempt.
- **Errors** are plain pages with no traceback and no hint about why a token was refused.
- **Logging**: one line per request with the route (never the path: it holds the token), the
  customer id when known, the outcome and the status. Never an address or a token.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.typedefs import Middleware

from mailer.clock import Clock
from mailer.errors import Unavailable
from mailer.http.client import ClientAddress, limit_key
from mailer.http.limits import RateLimiter

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
ErrorPage = Callable[[web.Request, int], web.Response]

# Keys a handler sets on the request for the log line.
CUSTOMER = web.RequestKey("mailer.customer_id", int)
OUTCOME = web.RequestKey("mailer.outcome", str)
# The client's address after `[http] trusted_proxies` (mailer.http.client).
CLIENT = web.RequestKey("mailer.client", str)

# Tokens that do not verify, per client a minute: a link copied with a character missing is a
# handful, guessing is thousands.
BAD_TOKENS_PER_MIN = 10


class Limits:
    """Which bucket a request counts against (see the module docstring); pure bookkeeping."""

    def __init__(self, per_min: int, clock: Clock, valid_token: Callable[[str], bool]) -> None:
        self.on = per_min > 0
        self._valid_token = valid_token
        self._links = RateLimiter(per_min, clock)
        self._bad_tokens = RateLimiter(min(per_min, BAD_TOKENS_PER_MIN), clock)
        self._clients = RateLimiter(per_min, clock)

    def retry_after_s(self, client: str, token: str | None) -> int:
        """0 if the request may go ahead (it is counted), else seconds to wait."""
        if token is not None and self._valid_token(token):
            return self._links.retry_after_s(f"{client} {token}")
        if token is not None:
            wait_s = self._bad_tokens.retry_after_s(client)
            if wait_s:
                return wait_s
        return self._clients.retry_after_s(client)


def make_middlewares(
    *, client_address: ClientAddress, limits: Limits, error_page: ErrorPage,
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
        client = client_address.of(request)  # always: it warns of an untrusted proxy
        request[CLIENT] = client  # the evidence of a consent change names it
        if limits.on and request.path not in exempt:
            wait_s = limits.retry_after_s(limit_key(client), request.match_info.get("token"))
            if wait_s:
                request[OUTCOME] = "rate limited"
                raise web.HTTPTooManyRequests(headers={"Retry-After": str(wait_s)})
        return await handler(request)

    return [log_and_errors, rate_limit]


def _route(request: web.Request) -> str:
    """The route's pattern (`/unsubscribe/{token}`), never the path itself."""
    info = request.match_info.route.resource
    return info.canonical if info is not None else "(no route)"
