"""Model inputs named as scikit-learn names them get SQL column names, and back."""

from __future__ import annotations

import pytest

from shared.db import check_identifier
from shared.errors import InvalidPayload
from shared.scoring.indb import features_from
from shared.scoring.kinds import Column, ModelKind, SqlType, column_name, input_columns
from shared.scoring.representation import Representation, RepresentationFormat


@pytest.mark.parametrize(
    ("name", "column"),
    [
        ("sepal length (cm)", "sepal_length_cm"),
        ("mean radius", "mean_radius"),
        ("od280/od315_of_diluted_wines", "od280_od315_of_diluted_wines"),
        ("2nd reading", "c_2nd_reading"),
        ("(%)", "c_"),
        ("age", "age"),
        ("Income_2", "Income_2"),
        ("x" * 80 + " y", "x" * 63),
    ],
)
def test_input_names_become_plain_sql_names(name: str, column: str) -> None:
    assert column_name(name) == column
    assert check_identifier(column_name(name)) == column


def test_two_inputs_on_one_column_are_refused_naming_both() -> None:
    with pytest.raises(InvalidPayload, match="'a b' and 'a-b' would be the same table column"):
        input_columns(["a b", "a-b", "c"])


def test_a_row_read_from_the_table_finds_inputs_by_their_column_names() -> None:
    """``mlmanager.predict(id, to_jsonb(t))`` passes the table's (lower-case) column names."""
    rep = Representation(
        format=RepresentationFormat.ONNX,
        payload=b"",
        inputs=(Column("sepal length (cm)", SqlType.DOUBLE), Column("Age", SqlType.DOUBLE)),
        outputs=(Column("PREDICTION", SqlType.TEXT),),
        kind=ModelKind.CLASSIFICATION,
        classes=(),
        method="predict",
        flavor="sklearn",
        model_uri="models:/m-1",
    )

    assert features_from(rep, {"sepal_length_cm": 5.1, "age": 3}) == {
        "sepal length (cm)": [5.1],
        "Age": [3],
    }
    assert features_from(rep, {"sepal length (cm)": 4.0, "Age": 1})["sepal length (cm)"] == [4.0]
    with pytest.raises(InvalidPayload, match="lack model inputs: sepal length"):
        features_from(rep, {"age": 3})
