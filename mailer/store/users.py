"""Console accounts, their sessions, login throttling and the console's audit trail.

**Passwords** are hashed with Argon2id (RFC 9106, argon2-cffi) at OWASP's recommended cost
(19 MiB, two passes): memory-hard, so guessing on graphics cards costs what it costs us. The
stored form is the PHC string (`$argon2id$v=19$m=…`), which names its parameters. Hashes made
before (`scrypt$n$r$p$salt$hash`, RFC 7914) still verify, and `needs_rehash` says when a
successful sign-in should store a new one. A new password must be hard to guess
(`password_problem`: zxcvbn's estimate, score 3 or more of 4).

**Sessions**: a cookie carries a random token; only its SHA-256 is stored.

**Login throttling** (`begin_login`): an attempt is counted before its password is checked, in
one transaction, so attempts that arrive together are counted one after another and a burst
cannot slip past the limit while the hashes run. Two counters:

- one name from one client (`name|client`): `free_failures` attempts, then a growing delay
  between attempts (30 s, doubling, at most `lockout_s`). Only that client is slowed: someone
  guessing a name from elsewhere cannot lock its owner out of their own address.
- one client, any names: past `client_failures` within the window it is refused for
  `lockout_s`, a ceiling for one address guessing many names.

A counter starts again once `window_s` has passed since its first attempt; a successful sign-in
clears its name's counter and takes its own attempt off the client's.
Times are unix seconds from the caller's clock, so tests move time instead of sleeping.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import secrets
from dataclasses import dataclass

import argon2
from zxcvbn import zxcvbn

from mailer.store.db import transaction, utcnow
from mailer.store.edge import translated
from mailer.store.engine import Connection, StoredRow

ROLES: tuple[str, ...] = ("admin", "marketing", "reviewer")

# OWASP's Argon2id parameters (19 MiB, t=2, p=1): about 30 ms a hash on one core, and little
# enough memory that a few sign-ins at once do not swell the console.
_ARGON2 = argon2.PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1)
_SCRYPT_MAXMEM = 128 * 1024 * 1024

MIN_PASSWORD = 12
MIN_STRENGTH = 3  # zxcvbn's score, 0-4: 3 is "safely unguessable" against online attacks
_STRENGTH_MAX_LENGTH = 72  # zxcvbn's own limit; a longer password is judged by its start

# The first delay once a name's free attempts from one client are used up; it doubles.
FIRST_DELAY_S = 30.0


@dataclass(frozen=True)
class User:
    id: int
    name: str
    role: str
    created_at: str


@dataclass(frozen=True)
class Session:
    user: User
    csrf: str
    created_at: float
    last_seen: float


# --- passwords (pure) ------------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def scrypt_hash(password: str) -> str:
    """An scrypt hash in the form stored before Argon2id (kept to test that those still
    verify and are replaced)."""
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode("utf-8"), salt=salt, n=2**15, r=8, p=1,
                            maxmem=_SCRYPT_MAXMEM, dklen=32)
    return f"scrypt${2**15}$8$1${_b64(salt)}${_b64(digest)}"


def password_problem(password: str, name: str = "") -> str | None:
    """Why `password` may not be used, in one line, or None. Pure."""
    if len(password) < MIN_PASSWORD:
        return f"use at least {MIN_PASSWORD} characters"
    result = zxcvbn(password[:_STRENGTH_MAX_LENGTH], user_inputs=[name] if name else [])
    if result["score"] >= MIN_STRENGTH:
        return None
    feedback = result["feedback"]
    why = str(feedback.get("warning") or "it is a common pattern").rstrip(".")
    return (f"too easy to guess ({why[:1].lower()}{why[1:]}); use a few uncommon words "
            "together")


def hash_password(password: str) -> str:
    """A new Argon2id hash (PHC string) of `password`."""
    return _ARGON2.hash(password)


def verify_password(password: str, stored: str) -> bool:
    """Whether `password` matches `stored` (Argon2id, or an older scrypt hash)."""
    if stored.startswith("$argon2"):
        try:
            return _ARGON2.verify(stored, password)
        except argon2.exceptions.VerificationError:
            return False
        except argon2.exceptions.InvalidHashError:
            return False
    return _verify_scrypt(password, stored)


def needs_rehash(stored: str) -> bool:
    """Whether a sign-in that verified against `stored` should store a new hash (an scrypt
    hash, or Argon2 with other parameters than today's)."""
    if not stored.startswith("$argon2"):
        return True
    try:
        return _ARGON2.check_needs_rehash(stored)
    except argon2.exceptions.InvalidHashError:
        return True


def _verify_scrypt(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, expected = stored.split("$")
        if scheme != "scrypt":
            return False
        digest = hashlib.scrypt(password.encode("utf-8"), salt=_unb64(salt), n=int(n),
                                r=int(r), p=int(p), maxmem=_SCRYPT_MAXMEM,
                                dklen=len(_unb64(expected)))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(digest, _unb64(expected))


@functools.cache
def dummy_hash() -> str:
    """A hash to check against when the name is unknown, so both cases take the same time
    (made on first use: importing this module must not cost a hash)."""
    return hash_password(secrets.token_hex(16))


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("ascii", "replace")).hexdigest()


# --- accounts ---------------------------------------------------------------------------


def _user(row: StoredRow) -> User:
    return User(id=row["id"], name=row["name"], role=row["role"], created_at=row["created_at"])


@translated("users: add user")
async def add_user(conn: Connection, name: str, role: str, password_hash: str) -> bool:
    """Create an account; False when the name is taken."""
    async with conn.execute(
        "INSERT INTO console_users (name, role, password_hash, created_at, updated_at) "
        "VALUES (?, ?, ?, ?, ?) ON CONFLICT (name) DO NOTHING",
        (name, role, password_hash, utcnow(), utcnow()),
    ) as cur:
        return cur.rowcount == 1


@translated("users: list users")
async def list_users(conn: Connection) -> list[User]:
    rows = await conn.execute_fetchall("SELECT * FROM console_users ORDER BY name")
    return [_user(r) for r in rows]


@translated("users: user with hash")
async def user_with_hash(conn: Connection, name: str) -> tuple[User, str] | None:
    async with conn.execute("SELECT * FROM console_users WHERE name = ?", (name,)) as cur:
        row = await cur.fetchone()
    return (_user(row), row["password_hash"]) if row else None


@translated("users: set password")
async def set_password(conn: Connection, name: str, password_hash: str) -> bool:
    """Change a password and end the account's sessions; False when there is no such user."""
    async with conn.execute(
        "UPDATE console_users SET password_hash = ?, updated_at = ? WHERE name = ?",
        (password_hash, utcnow(), name),
    ) as cur:
        changed = cur.rowcount == 1
    await conn.execute(
        "DELETE FROM console_sessions WHERE user_id = (SELECT id FROM console_users "
        "WHERE name = ?)", (name,))
    return changed


@translated("users: replace hash")
async def replace_hash(conn: Connection, user_id: int, old_hash: str,
                       new_hash: str) -> None:
    """Store a stronger hash of the same password, unless the password changed meanwhile
    (sessions are kept: it is the same password)."""
    await conn.execute(
        "UPDATE console_users SET password_hash = ? WHERE id = ? AND password_hash = ?",
        (new_hash, user_id, old_hash))


@translated("users: remove user")
async def remove_user(conn: Connection, name: str) -> bool:
    await conn.execute(
        "DELETE FROM console_sessions WHERE user_id = (SELECT id FROM console_users "
        "WHERE name = ?)", (name,))
    async with conn.execute("DELETE FROM console_users WHERE name = ?", (name,)) as cur:
        return cur.rowcount == 1


# --- sessions ---------------------------------------------------------------------------


@translated("users: create session")
async def create_session(conn: Connection, user_id: int, now: float) -> str:
    """A new session for the user; returns the token for the cookie."""
    token = secrets.token_urlsafe(32)
    await conn.execute(
        "INSERT INTO console_sessions (token_hash, user_id, csrf, created_at, last_seen) "
        "VALUES (?, ?, ?, ?, ?)",
        (_token_hash(token), user_id, secrets.token_urlsafe(32), now, now),
    )
    return token


@translated("users: session")
async def session(
    conn: Connection, token: str, now: float, *, idle_s: float, max_s: float
) -> Session | None:
    """The live session for `token` (touching it), or None when unknown or expired; an
    expired session is deleted."""
    key = _token_hash(token)
    async with conn.execute(
        "SELECT s.csrf, s.created_at, s.last_seen, u.id, u.name, u.role, u.created_at AS uc "
        "FROM console_sessions s JOIN console_users u ON u.id = s.user_id "
        "WHERE s.token_hash = ?", (key,),
    ) as cur:
        row = await cur.fetchone()
    if row is None:
        return None
    if now - row["last_seen"] > idle_s or now - row["created_at"] > max_s:
        await conn.execute("DELETE FROM console_sessions WHERE token_hash = ?", (key,))
        return None
    await conn.execute("UPDATE console_sessions SET last_seen = ? WHERE token_hash = ?",
                       (now, key))
    user = User(id=row["id"], name=row["name"], role=row["role"], created_at=row["uc"])
    return Session(user=user, csrf=row["csrf"], created_at=row["created_at"], last_seen=now)


@translated("users: end session")
async def end_session(conn: Connection, token: str) -> None:
    await conn.execute("DELETE FROM console_sessions WHERE token_hash = ?", (_token_hash(token),))


@translated("users: purge sessions")
async def purge_sessions(conn: Connection, now: float, *, idle_s: float,
                         max_s: float) -> int:
    async with conn.execute(
        "DELETE FROM console_sessions WHERE last_seen < ? OR created_at < ?",
        (now - idle_s, now - max_s),
    ) as cur:
        return cur.rowcount


# --- login throttling -------------------------------------------------------------------


@dataclass(frozen=True)
class Throttle:
    free_failures: int  # attempts for one name from one client before the delays start
    client_failures: int  # attempts from one client, any names, within the window
    window_s: float
    lockout_s: float  # the longest delay, and how long a client past its ceiling waits


def delay_after_s(attempts: int, throttle: Throttle) -> float:
    """How long one name from one client waits after its `attempts`-th failure. Pure."""
    if attempts < throttle.free_failures:
        return 0.0
    doublings = min(attempts - throttle.free_failures, 32)
    return min(throttle.lockout_s, FIRST_DELAY_S * 2.0 ** doublings)


def throttle_keys(name: str, client: str) -> tuple[str, str]:
    """The counters of an attempt: (one name from one client, the client)."""
    return f"user:{name.lower()}|client:{client}", f"client:{client}"


@translated("users: begin login")
async def begin_login(conn: Connection, keys: tuple[str, str], now: float,
                      throttle: Throttle) -> float:
    """Count an attempt as a failure before its password is checked, or refuse it: 0.0 if it
    may go ahead, else the seconds to wait. One transaction, so attempts arriving together
    are counted one after another (`login_succeeded` takes it back)."""
    pair, client = keys
    async with transaction(conn, "users: begin login"):
        rows = await conn.execute_fetchall(
            "SELECT key, failures, first_at, locked_until FROM console_login_failures "
            "WHERE key IN (?, ?)", (pair, client))
        found = {row["key"]: row for row in rows}
        wait_s = max((float(row["locked_until"]) - now for row in rows), default=0.0)
        if wait_s > 0:
            return wait_s
        counts: dict[str, tuple[int, float]] = {}
        for key in keys:
            row = found.get(key)
            if row is None or now - float(row["first_at"]) > throttle.window_s:
                counts[key] = (1, now)
            else:
                counts[key] = (int(row["failures"]) + 1, float(row["first_at"]))
        pair_count, pair_since = counts[pair]
        client_count, client_since = counts[client]
        pair_until = now + delay_after_s(pair_count, throttle)
        client_until = 0.0
        if client_count >= throttle.client_failures:
            client_until, client_count, client_since = now + throttle.lockout_s, 0, now
        for key, count, since, until in ((pair, pair_count, pair_since, pair_until),
                                         (client, client_count, client_since, client_until)):
            await conn.execute(
                "INSERT INTO console_login_failures (key, failures, first_at, locked_until) "
                "VALUES (?, ?, ?, ?) ON CONFLICT (key) DO UPDATE SET failures = "
                "excluded.failures, first_at = excluded.first_at, "
                "locked_until = excluded.locked_until", (key, count, since, until))
    return 0.0


@translated("users: login succeeded")
async def login_succeeded(conn: Connection, keys: tuple[str, str]) -> None:
    """The attempt `begin_login` counted was right: clear its name's counter, and take it
    off the client's. Inside the caller's transaction."""
    pair, client = keys
    await conn.execute("DELETE FROM console_login_failures WHERE key = ?", (pair,))
    await conn.execute("UPDATE console_login_failures SET failures = "
                       "CASE WHEN failures > 0 THEN failures - 1 ELSE 0 END "
                       "WHERE key = ?", (client,))


# --- audit ------------------------------------------------------------------------------


@translated("users: audit")
async def audit(conn: Connection, actor: str, action: str, target: str = "") -> None:
    """Record that `actor` did `action` to `target` (every change made from the console)."""
    await conn.execute(
        "INSERT INTO console_audit (at, actor, action, target) VALUES (?, ?, ?, ?)",
        (utcnow(), actor, action, target),
    )


@translated("users: audit log")
async def audit_log(conn: Connection, limit: int = 50) -> list[tuple[str, str, str, str]]:
    rows = await conn.execute_fetchall(
        "SELECT at, actor, action, target FROM console_audit ORDER BY id DESC LIMIT ?", (limit,))
    return [(r["at"], r["actor"], r["action"], r["target"]) for r in rows]
