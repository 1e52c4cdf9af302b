"""The audit log page (administrators only): who did what and when, newest first, paged by
id. The console records every change it makes (`store.users.audit`); `mailer users add`,
`passwd` and `remove` record theirs as "cli", and they are listed alike."""

from __future__ import annotations

import aiohttp.web as web

from mailer.console import forms
from mailer.console.page import render
from mailer.console.security import allow, conn_of
from mailer.store import console as console_store
from mailer.store.db import MAX_INTEGER

PAGE_SIZE = 50


@allow()  # administrators only
async def audit_log(request: web.Request) -> web.StreamResponse:
    before = forms.page_number(request.query.get("before"), largest=MAX_INTEGER)
    if before is None:
        raise web.HTTPBadRequest(text="The page to show ('before') must be an entry's id.")
    page = await console_store.audit_page(conn_of(request), before=before, limit=PAGE_SIZE)
    return render(request, "audit.html", "audit", page=page, before=before,
                  local=forms.utc_to_local)
