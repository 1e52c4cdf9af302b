"""Console accounts, their sessions, login throttling and the console's audit trail.

Passwords are hashed with scrypt (`hashlib.scrypt`, RFC 7914) under a random salt; the stored
form names its parameters (`scrypt$n$r$p$salt$hash`) so they can be raised later without
breaking old hashes. A session cookie carries a random token; only its SHA-256 is stored.
Times are unix seconds from the caller's clock, so tests move time instead of sleeping.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import secrets
from dataclasses import dataclass

import aiosqlite

from mailer.store.db import utcnow
from mailer.store.edge import translated

ROLES: tuple[str, ...] = ("admin", "marketing", "reviewer")

# RFC 7914 §2 parameters: N=2^15, r=8, p=1 is about 32 MiB and tens of milliseconds a hash.
_SCRYPT_N = 2**15
_SCRYPT_R = 8
_SCRYPT_P = 1
_SCRYPT_LEN = 32


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


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode("utf-8"), salt=salt, n=_SCRYPT_N, r=_SCRYPT_R,
                            p=_SCRYPT_P, maxmem=128 * 1024 * 1024, dklen=_SCRYPT_LEN)
    return f"scrypt${_SCRYPT_N}${_SCRYPT_R}${_SCRYPT_P}${_b64(salt)}${_b64(digest)}"


def verify_password(password: str, stored: str) -> bool:
    """Whether `password` matches `stored`; compared in constant time."""
    try:
        scheme, n, r, p, salt, expected = stored.split("$")
        if scheme != "scrypt":
            return False
        digest = hashlib.scrypt(password.encode("utf-8"), salt=_unb64(salt), n=int(n),
                                r=int(r), p=int(p), maxmem=128 * 1024 * 1024,
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


def _user(row: aiosqlite.Row) -> User:
    return User(id=row["id"], name=row["name"], role=row["role"], created_at=row["created_at"])


@translated("users: add user")
async def add_user(conn: aiosqlite.Connection, name: str, role: str, password_hash: str) -> bool:
    """Create an account; False when the name is taken."""
    async with conn.execute(
        "INSERT INTO console_users (name, role, password_hash, created_at, updated_at) "
        "VALUES (?, ?, ?, ?, ?) ON CONFLICT (name) DO NOTHING",
        (name, role, password_hash, utcnow(), utcnow()),
    ) as cur:
        return cur.rowcount == 1


@translated("users: list users")
async def list_users(conn: aiosqlite.Connection) -> list[User]:
    rows = await conn.execute_fetchall("SELECT * FROM console_users ORDER BY name")
    return [_user(r) for r in rows]


@translated("users: user with hash")
async def user_with_hash(conn: aiosqlite.Connection, name: str) -> tuple[User, str] | None:
    async with conn.execute("SELECT * FROM console_users WHERE name = ?", (name,)) as cur:
        row = await cur.fetchone()
    return (_user(row), row["password_hash"]) if row else None


@translated("users: set password")
async def set_password(conn: aiosqlite.Connection, name: str, password_hash: str) -> bool:
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


@translated("users: remove user")
async def remove_user(conn: aiosqlite.Connection, name: str) -> bool:
    await conn.execute(
        "DELETE FROM console_sessions WHERE user_id = (SELECT id FROM console_users "
        "WHERE name = ?)", (name,))
    async with conn.execute("DELETE FROM console_users WHERE name = ?", (name,)) as cur:
        return cur.rowcount == 1


# --- sessions ---------------------------------------------------------------------------


@translated("users: create session")
async def create_session(conn: aiosqlite.Connection, user_id: int, now: float) -> str:
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
    conn: aiosqlite.Connection, token: str, now: float, *, idle_s: float, max_s: float
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
async def end_session(conn: aiosqlite.Connection, token: str) -> None:
    await conn.execute("DELETE FROM console_sessions WHERE token_hash = ?", (_token_hash(token),))


@translated("users: purge sessions")
async def purge_sessions(conn: aiosqlite.Connection, now: float, *, idle_s: float,
                         max_s: float) -> int:
    async with conn.execute(
        "DELETE FROM console_sessions WHERE last_seen < ? OR created_at < ?",
        (now - idle_s, now - max_s),
    ) as cur:
        return cur.rowcount


# --- login throttling -------------------------------------------------------------------


@translated("users: locked until")
async def locked_until(conn: aiosqlite.Connection, keys: tuple[str, ...], now: float) -> float:
    """The latest lock over any of `keys` still in force at `now`, or 0."""
    marks = ",".join("?" * len(keys))
    async with conn.execute(
        f"SELECT max(locked_until) FROM console_login_failures WHERE key IN ({marks})", keys
    ) as cur:
        row = await cur.fetchone()
    until = float(row[0]) if row and row[0] is not None else 0.0
    return until if until > now else 0.0


@translated("users: record failure")
async def record_failure(
    conn: aiosqlite.Connection, keys: tuple[str, ...], now: float, *, max_failures: int,
    window_s: float, lockout_s: float,
) -> None:
    """Count a failed login against each key; a key reaching `max_failures` within the window
    is locked for `lockout_s`. A window that has passed starts again from one."""
    for key in keys:
        await conn.execute(
            "INSERT INTO console_login_failures (key, failures, first_at) VALUES (?, 1, ?) "
            "ON CONFLICT (key) DO UPDATE SET "
            "failures = CASE WHEN first_at < ? THEN 1 ELSE failures + 1 END, "
            "first_at = CASE WHEN first_at < ? THEN excluded.first_at ELSE first_at END",
            (key, now, now - window_s, now - window_s),
        )
        await conn.execute(
            "UPDATE console_login_failures SET locked_until = ?, failures = 0, first_at = ? "
            "WHERE key = ? AND failures >= ?",
            (now + lockout_s, now, key, max_failures),
        )


@translated("users: clear failures")
async def clear_failures(conn: aiosqlite.Connection, key: str) -> None:
    await conn.execute("DELETE FROM console_login_failures WHERE key = ?", (key,))


# --- audit ------------------------------------------------------------------------------


@translated("users: audit")
async def audit(conn: aiosqlite.Connection, actor: str, action: str, target: str = "") -> None:
    """Record that `actor` did `action` to `target` (every change made from the console)."""
    await conn.execute(
        "INSERT INTO console_audit (at, actor, action, target) VALUES (?, ?, ?, ?)",
        (utcnow(), actor, action, target),
    )


@translated("users: audit log")
async def audit_log(conn: aiosqlite.Connection, limit: int = 50) -> list[tuple[str, str, str, str]]:
    rows = await conn.execute_fetchall(
        "SELECT at, actor, action, target FROM console_audit ORDER BY id DESC LIMIT ?", (limit,))
    return [(r["at"], r["actor"], r["action"], r["target"]) for r in rows]
