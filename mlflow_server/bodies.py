"""Strict JSON request bodies, for every route of the server (ours and MLflow's).

Python's ``json`` accepts more than JSON and fails in ways Flask does not expect:
- ``NaN``/``Infinity`` literals are not JSON, and ``1e400`` becomes ``inf``; either
  reaches the database as ``Infinity``, which PostgreSQL's JSONB refuses (a 500);
- nesting deeper than the interpreter's recursion limit raises ``RecursionError``,
  which ``request.get_json(silent=True)`` does not catch (a 500 in every handler);
- an integer of more digits than ``sys.get_int_max_str_digits()`` raises a
  ``ValueError`` that ``silent=True`` turns into "no body" (a misleading 400);
- a ``\\ud800`` escape gives a string that cannot be encoded (a 500 on PostgreSQL).

:class:`StrictJSONProvider` makes every ``get_json`` of the app parse with :func:`loads`,
which refuses these with :class:`InvalidPayload` naming the field. That is not a
``ValueError``, so ``silent=True`` does not hide it; Flask's error handlers turn it into
a 400 (``app.py``). Plain syntax errors stay ``ValueError``s, so each handler keeps its
own answer to a body that is not JSON at all.
"""

from __future__ import annotations

import json
import math
import re
import sys
from typing import Any

from flask import Request
from flask.json.provider import DefaultJSONProvider

from shared.errors import InvalidPayload

# Deep enough for any body of ours or of MLflow's REST API (the deepest are a few levels),
# far below the ~1000 frames at which the parser itself fails.
MAX_DEPTH = 100


# JSON's \u escapes can spell half of a UTF-16 pair alone; such a string cannot be
# encoded (PostgreSQL's driver fails with UnicodeEncodeError: a 500).
_LONE_SURROGATE = re.compile(r"[\ud800-\udfff]")


class _Constant:
    """``NaN``, ``Infinity`` or ``-Infinity`` as written, so the check can name it."""

    def __init__(self, literal: str) -> None:
        self.literal = literal


class _LongInteger:
    """An integer too long for ``int()``, kept as its digit count."""

    def __init__(self, digits: int) -> None:
        self.digits = digits


def _long_integer_or_int(text: str) -> int | _LongInteger:
    limit = sys.get_int_max_str_digits()
    digits = len(text.lstrip("-"))
    return _LongInteger(digits) if limit and digits > limit else int(text)


def loads(data: str | bytes) -> Any:
    """Parse JSON as the JSON standard says, refusing what our databases cannot store.

    Raises ``ValueError`` for text that is not JSON and :class:`InvalidPayload` (field:
    the path of the bad value, e.g. ``payload.cpu_request``) for non-finite numbers,
    integers longer than Python converts, strings with a lone surrogate, and nesting
    deeper than :data:`MAX_DEPTH`.
    """
    try:
        value = json.loads(data, parse_constant=_Constant)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise
    except RecursionError:
        raise InvalidPayload(
            f"the body is nested more than {MAX_DEPTH} levels deep", field="body"
        ) from None
    except ValueError:
        # Only an over-long integer gets here (the decoder's own errors are the
        # JSONDecodeError above); parse again, slower, to find where it is.
        value = json.loads(data, parse_constant=_Constant, parse_int=_long_integer_or_int)
    if not _plainly_valid(value):
        _check(value)
    return value


def _plainly_valid(value: Any) -> bool:
    """True if nothing in the body is to be refused; fast, as it runs on every body.

    Writing the body back finds non-finite numbers (``allow_nan=False``), the markers of
    NaN literals and long integers (not serializable) and lone surrogates (not
    encodable) in C; the depth is counted a level at a time over containers only.
    Measured on a 1000-metric MLflow log-batch body (85 kB, best of 15 on a loaded
    2-core machine): parsing 2.1 ms, this check 3.2 ms more; a walk that tracks the
    path of every value (``_check``) took 5.7 ms.
    """
    try:
        json.dumps(value, allow_nan=False, ensure_ascii=False, check_circular=False).encode()
    except (ValueError, TypeError, RecursionError):
        return False
    level = [value] if isinstance(value, dict | list) else []
    for _ in range(MAX_DEPTH):
        if not level:
            return True
        level = [
            child
            for container in level
            for child in (container.values() if isinstance(container, dict) else container)
            if isinstance(child, dict | list)
        ]
    return not level


def _check(value: Any) -> None:
    """Find and refuse what :func:`_plainly_valid` found (without recursion: it may be
    deep), naming its path."""
    stack: list[tuple[Any, tuple[str, ...]]] = [(value, ())]
    while stack:
        item, path = stack.pop()
        if len(path) >= MAX_DEPTH and isinstance(item, dict | list):
            _refuse(path, f"is nested more than {MAX_DEPTH} levels deep")
        if isinstance(item, dict):
            for key, child in item.items():
                if _LONE_SURROGATE.search(key):
                    _refuse((*path, _printable(key)), "is a name that is not Unicode text")
                stack.append((child, (*path, key)))
        elif isinstance(item, list):
            stack.extend((v, (*path, str(i))) for i, v in enumerate(item))
        elif isinstance(item, str) and _LONE_SURROGATE.search(item):
            _refuse(path, "holds a lone UTF-16 surrogate (\\ud800-\\udfff), which is not text")
        elif isinstance(item, float) and not math.isfinite(item):
            _refuse(path, "is a number too large for a 64-bit float (at most about 1.8e308)")
        elif isinstance(item, _Constant):
            _refuse(path, f"is {item.literal}, which is not a JSON number")
        elif isinstance(item, _LongInteger):
            _refuse(
                path,
                f"is an integer of {item.digits} digits "
                f"(at most {sys.get_int_max_str_digits()} digits are accepted)",
            )


def _printable(name: str) -> str:
    return name.encode("utf-8", "backslashreplace").decode()


def _refuse(path: tuple[str, ...], problem: str) -> None:
    field = ".".join(path) or "body"
    raise InvalidPayload(f"{field} {problem}", field=field)


class StrictJSONProvider(DefaultJSONProvider):
    """The app's JSON provider: parses with :func:`loads`, writes as Flask does.

    Flask makes the app's provider the ``json_module`` of every request, so every
    ``get_json`` of the app parses strictly (and caches what it parsed).
    """

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        if kwargs:  # a caller's own parsing options: not a request body
            return super().loads(s, **kwargs)
        return loads(s)


# MLflow's artifact uploads carry files (a ``.json`` artifact is sent as application/json),
# not API bodies: never parse them.
_ARTIFACT_PATH = "/mlflow-artifacts/artifacts"


def check_body(request: Request, ours: bool) -> None:
    """Parse a JSON body once, strictly, before any handler or permission check reads it.

    ``get_json`` caches the result, so the handlers then read the same parsed body.
    On MLflow's routes the body must also be an object (or a string holding one: MLflow
    accepts old clients' double-encoded bodies), as its handlers assume; ours check that
    themselves with a message naming the route's fields.
    """
    if request.method not in ("POST", "PUT", "PATCH", "DELETE") or not request.is_json:
        return
    if _ARTIFACT_PATH in request.path:
        return
    body = request.get_json(silent=True)
    if ours or body is None:  # not JSON at all: each handler answers that itself
        return
    if isinstance(body, str):
        try:
            body = loads(body)
        except ValueError:
            raise InvalidPayload(
                "the body is a JSON string that holds no JSON", field="body"
            ) from None
    if not isinstance(body, dict):
        raise InvalidPayload("the body must be a JSON object", field="body")
