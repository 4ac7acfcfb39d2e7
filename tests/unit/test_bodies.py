"""Request bodies are parsed as JSON says, refusing what the databases cannot store,
with the path of the bad value named (the server answers 400; see test_api.py)."""

from __future__ import annotations

import json
import math
import sys

import pytest
from flask import Flask, request

from mlflow_server.bodies import MAX_DEPTH, StrictJSONProvider, loads
from shared.errors import InvalidPayload


@pytest.mark.parametrize(
    ("text", "field", "words"),
    [
        ('{"payload": {"cpu_request": 1e400}}', "payload.cpu_request", "64-bit float"),
        ('{"a": [1, -1e400]}', "a.1", "64-bit float"),
        ('{"payload": {"x": NaN}}', "payload.x", "NaN, which is not a JSON number"),
        ('{"x": Infinity}', "x", "Infinity"),
        ('{"x": [-Infinity]}', "x.0", "-Infinity"),
        ('{"steps": ' + "9" * 5000 + "}", "steps", "integer of 5000 digits"),
        ('{"steps": -' + "9" * 5000 + "}", "steps", "integer of 5000 digits"),
        ('{"p": {"lib": {"k": "a\\ud800b"}}}', "p.lib.k", "lone UTF-16 surrogate"),
        ('{"tags": ["\\udc00"]}', "tags.0", "lone UTF-16 surrogate"),
        ('{"a": {"k\\ud800": 1}}', "a.k\\ud800", "not Unicode text"),
        ("[" * 10_000 + "]" * 10_000, "body", f"more than {MAX_DEPTH} levels deep"),
        ('{"a": ' + "[" * 10_000 + "]" * 10_000 + "}", "body", "levels deep"),
    ],
)
def test_refused_values_name_their_field(text: str, field: str, words: str) -> None:
    for data in (text, text.encode()):
        with pytest.raises(InvalidPayload) as err:
            loads(data)
        assert err.value.field == field
        assert words in err.value.message


def test_nesting_the_parser_survives_is_still_limited() -> None:
    limit = "[" * MAX_DEPTH + "]" * MAX_DEPTH
    assert loads(limit) == json.loads(limit)
    for text, field in (
        ("[" + limit + "]", "0" + ".0" * (MAX_DEPTH - 1)),
        ('{"a": ' + limit + "}", "a" + ".0" * (MAX_DEPTH - 1)),
        ('{"a": [' + limit + "]}", "a" + ".0" * (MAX_DEPTH - 1)),
    ):
        with pytest.raises(InvalidPayload) as err:
            loads(text)
        assert err.value.field == field
        assert f"more than {MAX_DEPTH} levels deep" in err.value.message


def test_valid_json_parses_as_the_json_module_does() -> None:
    text = (
        '{"a": [1, 2.5, -3e10, 1.7e308, true, null, "x\\u00e9 \\ud83d\\ude00"], '
        '"b": {"c": 12345678901234567890}}'
    )
    assert loads(text) == json.loads(text)
    digits = sys.get_int_max_str_digits()
    assert loads("9" * digits) == int("9" * digits)
    assert math.isclose(loads("1e-400"), 0.0)  # underflow is a finite number


def test_text_that_is_not_json_stays_a_value_error() -> None:
    # Flask's get_json(silent=True) turns these into "no body"; each handler answers that.
    for data in ("", "{", "not json", b"\xff\xfe{", '{"a": 1,}'):
        with pytest.raises(ValueError):
            loads(data)


def test_every_get_json_of_the_app_parses_strictly_and_caches() -> None:
    app = Flask(__name__)
    app.json = StrictJSONProvider(app)
    hostile = '{"payload": {"cpu_request": 1e400}}'
    with app.test_request_context(method="POST", data=hostile, content_type="application/json"):
        for force, silent in ((False, True), (True, True), (False, False)):
            with pytest.raises(InvalidPayload) as err:
                request.get_json(force=force, silent=silent)
            assert err.value.field == "payload.cpu_request"
    with app.test_request_context(method="POST", data='{"a": 1}', content_type="application/json"):
        first = request.get_json(silent=True)
        assert first == {"a": 1} and request.get_json(force=True, silent=True) is first
    assert app.json.dumps({"b": 1.5}) == '{"b": 1.5}'  # writing is Flask's
