"""The marketing console: an internal aiohttp application behind a login.

    app.py        the application factory, the route table and `serve` (its own listener)
    security.py   error pages, sessions, roles, CSRF, body limits, where to go after login
    render.py     templates/console through mailer.http.pages (the one Jinja2 sandbox)
    page.py       rendering a page with the user, navigation and CSRF token; signed notices
    links.py      every call into other areas (campaigns, review, import, IMAP, status)
    login.py overview.py campaigns.py review.py customers.py   one module per page family
    chart.py      the overview's charts as inline SVG (pure)
    forms.py      form reading and local-time conversion (pure)

Handlers are thin: they read a form, call the same services the CLI calls (through
`links`), and render a page. Every change is made in the user's name (the audit trail, and
`actor` in the consent history for a review resolution).
"""
