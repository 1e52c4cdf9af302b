"""The one form reader (`mailer.http.forms.read_form`) behind a real aiohttp server on
loopback, fed raw bytes: whatever the headers and body, the answer is the form or a 4xx with
one line, never a 500."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailer.http.forms import read_form

MAX_BODY = 64 * 1024


async def _echo(request: web.Request) -> web.Response:
    form = await read_form(request)
    fields = {name: (value if isinstance(value, str) else f"file:{value.filename}")
              for name, value in form.items()}
    return web.json_response(fields)


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes


@dataclass
class FormServer:
    port: int
    errors: list[str]

    def post(self, content_type: str | None, body: bytes) -> Answer:
        head = [b"POST /form HTTP/1.1", b"Host: 127.0.0.1", b"Connection: close",
                b"Content-Length: " + str(len(body)).encode()]
        if content_type is not None:
            head.append(b"Content-Type: " + content_type.encode("latin-1"))
        with socket.create_connection(("127.0.0.1", self.port), timeout=10) as sock:
            sock.sendall(b"\r\n".join(head) + b"\r\n\r\n" + body)
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        raw = b"".join(chunks)
        status = int(raw.split(b" ", 2)[1])
        return Answer(status, raw.partition(b"\r\n\r\n")[2])


@pytest.fixture(scope="module")
def server() -> Iterator[FormServer]:
    """A real aiohttp server in a thread of its own (the property test below is not async)."""
    loop = asyncio.new_event_loop()
    app = web.Application(client_max_size=MAX_BODY)
    app.router.add_post("/form", _echo)
    runner = web.AppRunner(app, access_log=None)
    loop.run_until_complete(runner.setup())
    site = web.TCPSite(runner, "127.0.0.1", 0)
    loop.run_until_complete(site.start())
    port = runner.addresses[0][1]
    errors: list[str] = []

    def record(loop: asyncio.AbstractEventLoop, context: dict[str, object]) -> None:
        errors.append(str(context.get("message")))

    loop.set_exception_handler(record)
    thread = threading.Thread(target=loop.run_forever, name="form server", daemon=True)
    thread.start()
    try:
        yield FormServer(port, errors)
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()


def _multipart(boundary: str, *parts: bytes, end: bool = True) -> bytes:
    body = b"".join(b"--" + boundary.encode() + b"\r\n" + part + b"\r\n" for part in parts)
    return body + (b"--" + boundary.encode() + b"--\r\n" if end else b"")


FIELD = b'Content-Disposition: form-data; name="a"\r\n\r\nvalue'


@pytest.mark.parametrize(("content_type", "body", "problem"), [
    ("application/x-www-form-urlencoded", b"a=\xff\xfe", b"not valid utf-8"),
    ("application/x-www-form-urlencoded; charset=x-nope", b"a=b", b"unknown charset"),
    ("multipart/form-data", _multipart("xyz", FIELD), b"malformed multipart/form-data"),
    ("multipart/form-data; boundary=xyz", _multipart("xyz", FIELD, end=False)[:-9],
     b"malformed multipart/form-data"),
    ("multipart/form-data; boundary=xyz",
     _multipart("xyz", b"Content-Disposition: form-data\r\n\r\nnameless"),
     b"malformed multipart/form-data"),
    ("multipart/form-data; boundary=xyz",
     _multipart("xyz", b'Content-Disposition: form-data; name="a"\r\n'
                       b"Content-Type: text/plain; charset=x-nope\r\n\r\nvalue"),
     b"unknown charset"),
    ("multipart/form-data; boundary=xyz",
     _multipart("xyz", b"Content-Disposition: form-data; name=\"file\"; "
                       b"filename*=utf-8''evil%0D%0ALocation%3A%20x.csv\r\n\r\na,b"),
     b"control characters"),
    ("multipart/form-data; boundary=xyz",
     _multipart("xyz", b'Content-Disposition: form-data; name="a"\r\n'
                       b"Content-Type: application/octet-stream\r\n\r\n\xff\xfe"),
     b"is not utf-8 text"),
    ("multipart/form-data; boundary=xyz", b"--xyz\r\nC", b"malformed multipart/form-data"),
    ("multipart/form-data; boundary=xyz",
     _multipart("xyz", b'Content-Disposition: form-data; name="a"\r\n'
                       b"Content-Transfer-Encoding: x-nope\r\n\r\nvalue"),
     b"malformed multipart/form-data"),
])
def test_a_body_that_is_not_a_readable_form_is_a_400_with_one_line_saying_why(
    server: FormServer, content_type: str, body: bytes, problem: bytes
) -> None:
    answer = server.post(content_type, body)
    assert answer.status == 400
    assert problem in answer.body.lower()
    assert answer.body.startswith(b"The form could not be read: ")
    assert answer.body.count(b"\n") <= 1


def test_a_good_form_reads_as_text_fields_and_named_files(server: FormServer) -> None:
    urlencoded = server.post("application/x-www-form-urlencoded", b"a=Zo%C3%AB&b=1")
    assert urlencoded.status == 200
    assert json.loads(urlencoded.body) == {"a": "Zoë", "b": "1"}
    multipart = server.post("multipart/form-data; boundary=xyz", _multipart(
        "xyz", FIELD, b'Content-Disposition: form-data; name="f"; filename="c.csv"\r\n\r\nx'))
    assert multipart.status == 200
    assert json.loads(multipart.body) == {"a": "value", "f": "file:c.csv"}


def test_a_body_past_the_limit_stays_a_413(server: FormServer) -> None:
    answer = server.post("application/x-www-form-urlencoded", b"a=" + b"x" * (MAX_BODY + 1))
    assert answer.status == 413


_CHARSETS = st.sampled_from(["utf-8", "latin-1", "x-nope", "utf-16", "ascii", ""])
_TYPES = st.sampled_from(["application/x-www-form-urlencoded", "multipart/form-data",
                          "text/plain", ""])
_HEADER_TEXT = st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF), max_size=30)


@st.composite
def _content_type(draw: st.DrawFn) -> str | None:
    kind = draw(_TYPES)
    if not kind:
        return draw(st.none() | _HEADER_TEXT)
    params = draw(st.lists(st.sampled_from(["charset", "boundary", "name"]), max_size=2))
    values = [f"{p}={draw(st.sampled_from(['xyz', '']) | _HEADER_TEXT | _CHARSETS)}"
              for p in params]
    return "; ".join([kind, *values])


@st.composite
def _part(draw: st.DrawFn) -> bytes:
    headers = []
    disposition = draw(st.sampled_from(['form-data; name="a"', "form-data", "attachment",
                                        'form-data; name="f"; filename="x.csv"',
                                        "form-data; name=\"f\"; filename*=utf-8''%0D%0A",
                                        'form-data; name="a"; filename=""']))
    headers.append(b"Content-Disposition: " + disposition.encode())
    if draw(st.booleans()):
        headers.append(b"Content-Type: " + draw(st.sampled_from(
            ["text/plain", "application/octet-stream", "multipart/mixed; boundary=q"])).encode()
            + b"; charset=" + draw(_CHARSETS).encode())
    if draw(st.booleans()):
        headers.append(b"Content-Transfer-Encoding: " + draw(st.sampled_from(
            [b"base64", b"quoted-printable", b"binary", b"x-nope", b""])))
    if draw(st.booleans()):
        headers.append(b"Content-Encoding: " + draw(st.sampled_from(
            [b"gzip", b"deflate", b"identity", b"x-nope", b""])))
    return b"\r\n".join(headers) + b"\r\n\r\n" + draw(st.binary(max_size=40))


@st.composite
def _body(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["bytes", "after a boundary", "parts"]))
    if kind == "bytes":
        return draw(st.binary(max_size=200))
    if kind == "after a boundary":
        return b"--xyz\r\n" + draw(st.binary(max_size=60))
    body = _multipart("xyz", *draw(st.lists(_part(), max_size=3)), end=draw(st.booleans()))
    return body[:draw(st.integers(min_value=0, max_value=len(body)))]


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(content_type=_content_type(), body=_body())
def test_any_headers_and_bytes_give_the_form_or_a_4xx_never_another_error(
    server: FormServer, content_type: str | None, body: bytes
) -> None:
    answer = server.post(content_type, body)
    assert answer.status in (200, 400, 413), answer
    assert server.errors == []
