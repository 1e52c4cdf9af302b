"""Reading a request's form body (urlencoded or multipart) without ever failing with a 500.

`read_form` is the one way handlers of both listeners read a POSTed form. aiohttp's
`Request.post()` raises whatever its parsers meet on a hostile or broken body: LookupError for
an unknown charset, UnicodeDecodeError for bytes that are not in the charset, ValueError for a
multipart body without a boundary, cut short or with a part without a name, an
HttpProcessingError for a part whose header lines are not header fields, RuntimeError for a
part in an unknown transfer encoding. Here each of those is a `BadForm` (400) with one line
saying what is wrong, and the values handed on are plain: every text field a `str`, every
file a `FileField` whose name holds no control character (it ends up in pages, log lines and
headers). A body past the app's `client_max_size` stays aiohttp's 413.
"""

from __future__ import annotations

import binascii
import unicodedata

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from multidict import MultiDict, MultiDictProxy

__all__ = ["BadForm", "FormValue", "read_form"]

FormValue = str | web.FileField

# What `Request.post()` raises for a body it cannot parse (see the module docstring);
# binascii.Error for a part with a broken base64 Content-Transfer-Encoding (RFC 2045 §6.8),
# HttpProcessingError for a part's header line that is not a header field
# (RFC 2046 §5.1.1: a part starts with header fields).
# aiohttp raises RuntimeError for a part's unknown Content-Transfer-Encoding (RFC 7578 §4.7
# deprecates the header; a client may still send it).
_PARSE_ERRORS = (AssertionError, LookupError, ValueError, binascii.Error, EOFError,
                 HttpProcessingError, RuntimeError)


class BadForm(web.HTTPBadRequest):
    """400: the form body cannot be read; `text` is the one line saying why."""

    def __init__(self, problem: str) -> None:
        super().__init__(text=f"The form could not be read: {problem}.")
        self.problem = problem


async def read_form(request: web.Request) -> MultiDictProxy[FormValue]:
    """The request's form fields; BadForm (400) for a body that is not a readable form,
    HTTPRequestEntityTooLarge (413) past the app's body limit. A request that is not a form
    at all (no body, another content type) reads as an empty form, as `post()` does."""
    try:
        raw = await request.post()
    except web.HTTPException:
        raise
    except UnicodeDecodeError as exc:
        raise BadForm(f"it is not valid {exc.encoding}") from None
    except LookupError as exc:  # an unknown charset names itself in the message
        raise BadForm(f"unknown charset {_quoted(str(exc).rpartition(':')[2].strip())}") \
            from None
    except _PARSE_ERRORS as exc:
        raise BadForm(f"malformed {request.content_type} body ({_describe(exc)})") from None
    form: MultiDict[FormValue] = MultiDict()
    for name, value in raw.items():
        if isinstance(value, web.FileField):
            if _has_control(value.filename):
                raise BadForm(f"the file name in field {_quoted(name)} holds control "
                              "characters")
            form.add(name, value)
        elif isinstance(value, str):
            form.add(name, value)
        else:  # a part of a non-text type without a file name: aiohttp leaves it as bytes
            try:
                form.add(name, bytes(value).decode("utf-8"))
            except UnicodeDecodeError:
                raise BadForm(f"field {_quoted(name)} is not UTF-8 text") from None
    return MultiDictProxy(form)


def _has_control(value: str) -> bool:
    return any(unicodedata.category(char) == "Cc" for char in value)


def _quoted(value: str) -> str:
    """A client's value safe for a one-line message: short, printable, quoted."""
    cleaned = "".join(c if c.isprintable() else "?" for c in value[:40])
    return repr(cleaned)


def _describe(exc: BaseException) -> str:
    message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return _quoted(message[:80]).strip("'\"")
