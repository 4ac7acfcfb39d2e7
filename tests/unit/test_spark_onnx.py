"""Our tree conversion of Spark's model data (shared/scoring/spark_onnx.py), run by onnxruntime."""

from __future__ import annotations

import numpy as np
import onnxruntime
from onnx import TensorProto, helper

from shared.scoring.spark_onnx import _ensemble_attributes, _Node


def leaf(prediction: float, stats: tuple[float, ...] = ()) -> _Node:
    return _Node(-1, -1, -1, False, (), prediction, stats)


def regressor(trees: list[dict[int, _Node]], weights: list[float]) -> onnxruntime.InferenceSession:
    node = helper.make_node(
        "TreeEnsembleRegressor",
        ["x"],
        ["y"],
        domain="ai.onnx.ml",
        n_targets=1,
        aggregate_function="SUM",
        **_ensemble_attributes(trees, weights, None),
    )
    graph = helper.make_graph(
        [node],
        "trees",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 1])],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.ml", 3)]
    )
    return onnxruntime.InferenceSession(model.SerializeToString())


def test_a_categorical_split_sends_its_set_of_categories_left() -> None:
    """Spark: categories 0 and 2 of feature 1 go left; 1, 3 and an unseen index right."""
    tree = {
        0: _Node(1, 2, 1, True, (0.0, 2.0), 0.0, ()),
        1: leaf(5.0),
        2: _Node(3, 4, 0, False, (0.5,), 0.0, ()),  # a threshold on feature 0 below
        3: leaf(7.0),
        4: leaf(9.0),
    }
    x = np.array([[0, 0], [0, 1], [0, 2], [0, 3], [1, 1], [0, 7]], dtype=np.float32)
    (y,) = regressor([tree], [1.0]).run(None, {"x": x})
    assert y.reshape(-1).tolist() == [5.0, 7.0, 5.0, 7.0, 9.0, 7.0]


def test_the_trees_are_summed_with_their_weights() -> None:
    """GBT: the weighted sum of the trees; a forest's weights are 1/n (the mean)."""
    first = {0: _Node(1, 2, 0, False, (0.0,), 0.0, ()), 1: leaf(1.0), 2: leaf(2.0)}
    second = {0: leaf(10.0)}
    x = np.array([[-1, 0], [1, 0]], dtype=np.float32)
    (y,) = regressor([first, second], [1.0, 0.1]).run(None, {"x": x})
    np.testing.assert_allclose(y.reshape(-1), [2.0, 3.0], rtol=1e-6)
