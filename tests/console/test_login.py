"""Signing in to the console, attacked over HTTP through aiohttp's test client (a real server on
loopback, a real database: SQLite and PostgreSQL): parallel guessing, lock-outs of someone
else, redirects to other sites after sign-in, oversized bodies, old password hashes, and the
headers of every answer."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

import pytest
from aiohttp import FormData
from aiohttp.test_utils import TestClient

from mailer.console.security import FORM_MAX_BYTES
from mailer.store import users
from mailer.store.db import open_db, transaction
from tests.campaigns.world import World
from tests.console.world import (
    PASSWORD,
    FakeClock,
    add_users,
    csrf,
    login,
    query,
    token_in,
)
from tests.servers import SmtpSink

Client = TestClient[object, object]
ATTACKER = {"X-Forwarded-For": "203.0.113.66"}
OWNER = {"X-Forwarded-For": "198.51.100.7"}


@pytest.fixture
async def world(tmp_path: Path, smtp_sink: SmtpSink, database: Path | str) -> World:
    # The console sits behind a proxy on loopback that names the client in X-Forwarded-For.
    world = World.build(tmp_path, smtp_sink, database, http={"trusted_proxies": ["127.0.0.1"]})
    await add_users(world.settings)
    return world



async def attempt(client: Client, name: str, password: str,
                  headers: dict[str, str] | None = None, next_path: str = "/") -> int:
    """One sign-in from the client named in `headers`; the status of the POST."""
    client.session.cookie_jar.clear()
    token = token_in(await (await client.get("/login")).text())
    response = await client.post("/login", data={"name": name, "password": password,
                                                 "login_token": token, "next": next_path},
                                 headers=headers or {}, allow_redirects=False)
    return response.status


# --- guessing ---------------------------------------------------------------------------------


async def test_a_burst_of_parallel_guesses_has_no_more_passwords_checked_than_the_limit(
    client: Client, world: World
) -> None:
    limit = world.settings.console.login_max_failures
    token = token_in(await (await client.get("/login")).text())  # one form, 60 posts of it
    responses = await asyncio.gather(*(
        client.post("/login", data={"name": "admin", "password": f"wrong password {n}",
                                    "login_token": token, "next": "/"},
                    allow_redirects=False) for n in range(60)))
    statuses = [r.status for r in responses]

    assert statuses.count(401) == limit, statuses  # each attempt counted before its check
    assert statuses.count(429) == 60 - limit
    assert await attempt(client, "admin", PASSWORD) == 429  # the right one comes too late
    assert query(world.db, "SELECT count(*) FROM console_sessions") == [(0,)]


async def test_someone_failing_from_elsewhere_does_not_lock_the_owner_out(
    client: Client, world: World
) -> None:
    for _ in range(world.settings.console.login_max_failures * 2):
        assert await attempt(client, "admin", "wrong password!", ATTACKER) in (401, 429)
    assert await attempt(client, "admin", PASSWORD, ATTACKER) == 429  # slowed, whatever it sends
    assert await attempt(client, "admin", PASSWORD, OWNER) == 303  # the owner, at once


async def test_one_address_meets_growing_delays_that_pass_with_time(
    client: Client, world: World, clock: FakeClock
) -> None:
    limit = world.settings.console.login_max_failures
    for _ in range(limit):
        assert await attempt(client, "admin", "wrong password!", ATTACKER) == 401
    token = token_in(await (await client.get("/login")).text())
    refused = await client.post("/login", data={"name": "admin", "password": PASSWORD,
                                                "login_token": token}, headers=ATTACKER,
                                allow_redirects=False)
    assert refused.status == 429
    first_wait = int(refused.headers["Retry-After"])
    assert "Too many failed attempts. Wait 1 minute" in await refused.text()
    clock.advance(first_wait)
    assert await attempt(client, "admin", "wrong password!", ATTACKER) == 401
    token = token_in(await (await client.get("/login")).text())
    again = await client.post("/login", data={"name": "admin", "password": PASSWORD,
                                              "login_token": token}, headers=ATTACKER,
                              allow_redirects=False)
    assert again.status == 429 and int(again.headers["Retry-After"]) == 2 * first_wait
    clock.advance(2 * first_wait)
    assert await attempt(client, "admin", PASSWORD, ATTACKER) == 303
    # Signed in: the name's counter for that address starts again.
    assert await attempt(client, "admin", "wrong password!", ATTACKER) == 401


# --- where to go after signing in ---------------------------------------------------------------


@pytest.mark.parametrize("target", [
    "//evil.example/", "/\\evil.example", "/%09/evil.example", "/%0a/evil.example",
    "/%0d%0a/evil.example", "https:evil.example", "https://evil.example/",
    "\\\\evil.example", "/\t/evil.example", "/%5Cevil.example", "/%2F/evil.example",
    " //evil.example", "javascript:alert(1)",
])
async def test_after_sign_in_no_form_of_next_leads_off_the_console(
    client: Client, target: str
) -> None:
    client.session.cookie_jar.clear()
    token = token_in(await (await client.get("/login")).text())
    response = await client.post("/login", data={"name": "reviewer", "password": PASSWORD,
                                                 "login_token": token, "next": target},
                                 allow_redirects=False)
    assert response.status == 303
    assert response.headers["Location"] == "/", target
    # Already signed in, the login page sends a GET's `next` the same way.
    again = await client.get("/login", params={"next": target}, allow_redirects=False)
    assert again.status == 303 and again.headers["Location"] == "/", target


async def test_after_sign_in_a_path_on_the_console_is_kept(client: Client) -> None:
    assert await attempt(client, "reviewer", PASSWORD, next_path="/customers?q=ann") == 303
    client.session.cookie_jar.clear()
    token = token_in(await (await client.get("/login")).text())
    response = await client.post("/login", data={"name": "reviewer", "password": PASSWORD,
                                                 "login_token": token,
                                                 "next": "/customers?q=ann"},
                                 allow_redirects=False)
    assert response.headers["Location"] == "/customers?q=ann"


# --- bodies -----------------------------------------------------------------------------------


async def test_an_oversized_body_is_refused_with_413_before_anyone_signs_in(
    client: Client,
) -> None:
    token = token_in(await (await client.get("/login")).text())
    big = {"name": "admin", "password": "x" * (FORM_MAX_BYTES + 1), "login_token": token}
    response = await client.post("/login", data=big, allow_redirects=False)
    assert response.status == 413
    # An anonymous upload is sent to sign in before its body is read.
    upload = await client.post("/customers/import", data=b"x" * (FORM_MAX_BYTES * 4),
                               headers={"Content-Type": "application/octet-stream"},
                               allow_redirects=False)
    assert upload.status == 303 and upload.headers["Location"] == "/login"


async def test_a_csv_larger_than_a_form_is_imported_by_a_signed_in_reviewer(
    client: Client, world: World
) -> None:
    rows = "".join(f"Person {n},p{n}@example.com\n" for n in range(4000))
    assert len(rows) > FORM_MAX_BYTES
    assert await login(client, "reviewer") == 303
    token = await csrf(client, "/customers/import")
    data = FormData()
    data.add_field("csrf", token)
    data.add_field("file", io.BytesIO(("name,email\n" + rows).encode()),
                   filename="people.csv", content_type="text/csv")
    data.add_field("consent", "opted-in")
    response = await client.post("/customers/import", data=data, allow_redirects=False)
    assert response.status == 303
    assert query(world.db, "SELECT count(*) FROM customers") == [(4000,)]


# --- passwords and headers ----------------------------------------------------------------------


async def test_an_older_scrypt_hash_still_signs_in_and_is_replaced_by_argon2id(
    client: Client, world: World
) -> None:
    async with open_db(world.db) as conn, transaction(conn):
        await users.add_user(conn, "olda", "reviewer", users.scrypt_hash(PASSWORD))
    assert await login(client, "olda", "wrong password!") == 401
    assert str(query(world.db, "SELECT password_hash FROM console_users WHERE name = 'olda'"
                     )[0][0]).startswith("scrypt$")
    assert await login(client, "olda") == 303
    [(stored,)] = query(world.db, "SELECT password_hash FROM console_users WHERE name = 'olda'")
    assert str(stored).startswith("$argon2id$")
    assert await login(client, "olda") == 303


async def test_every_console_answer_carries_the_shared_headers_and_names_no_versions(
    client: Client,
) -> None:
    answers = [await client.get("/login"), await client.get("/no-such-page"),
               await client.get("/review", allow_redirects=False)]
    assert [a.status for a in answers] == [200, 404, 303]
    for answer in answers:
        assert answer.headers["Server"] == "mailer"
        assert answer.headers["Cross-Origin-Resource-Policy"] == "same-origin"
        assert answer.headers["Cross-Origin-Opener-Policy"] == "same-origin"
        assert answer.headers["Content-Security-Policy"].startswith("default-src 'none'")
