"""Our ONNX converters for the Spark ML stages onnxmltools converts wrongly.

Each replaces onnxmltools' converter for one stage (``register``, called before
every conversion); the rest of its Spark ML converter is used as it is. What
onnxmltools 1.16.0 gets wrong, found by comparing its graphs with ``transform`` on
pyspark 4.3 (tests/integration/test_kinds_spark.py shows each pipeline agreeing now):

- ``StringIndexerModel``: an unseen category (and a NULL, scored as "") becomes
  -1; Spark with ``handleInvalid="keep"`` gives the index after the labels.
- ``StandardScalerModel``: a constant column (std 0) is scaled by ``1 / 0``, which
  gives NaN; Spark gives 0. ``MinMaxScalerModel``: the output range (``min``/``max``) is
  ignored and a constant column is 0; Spark gives the middle of the range.
- ``LogisticRegressionModel``: a multinomial model gets a sigmoid per class scaled
  to sum 1; Spark takes the softmax of the margins. (It also prints its weights.)
- Trees (decision tree, random forest, GBT; classifiers and regressors): a split on
  a categorical feature (a StringIndexer's index, which Spark marks nominal) sends
  a *set* of categories left; onnxmltools reads the first category as a ``<=``
  threshold. Here such a split is a chain of ``==`` nodes, one per category.
- ``GBTRegressionModel``: computed and typed as a 0/1 label (the argmax of
  ``[-margin, margin]``), not the weighted sum of its trees.

Build-time code: imports pyspark and onnxmltools (the ``spark`` extra).
"""

from __future__ import annotations

import itertools
import os
import tempfile
from dataclasses import dataclass
from typing import Any

import numpy as np
from onnx import TensorProto

_ML = "ai.onnx.ml"


def register() -> None:
    """Put our converters in place of onnxmltools' (idempotent)."""
    import onnxmltools.convert.sparkml  # noqa: F401  (registers its own first: ours replace them)
    from onnxmltools.convert.common._registration import (
        register_converter,
        register_shape_calculator,
    )

    for name, converter in (
        ("pyspark.ml.feature.StringIndexerModel", _string_indexer),
        ("pyspark.ml.feature.StandardScalerModel", _scaler),
        ("pyspark.ml.feature.MinMaxScalerModel", _scaler),
        ("pyspark.ml.classification.LogisticRegressionModel", _logistic_regression),
        ("pyspark.ml.classification.DecisionTreeClassificationModel", _tree_classifier),
        ("pyspark.ml.classification.RandomForestClassificationModel", _tree_classifier),
        ("pyspark.ml.classification.GBTClassificationModel", _gbt_classifier),
        ("pyspark.ml.regression.DecisionTreeRegressionModel", _tree_regressor),
        ("pyspark.ml.regression.RandomForestRegressionModel", _tree_regressor),
        ("pyspark.ml.regression.GBTRegressionModel", _tree_regressor),
    ):
        register_converter(name, converter, overwrite=True)
    register_shape_calculator(
        "pyspark.ml.regression.GBTRegressionModel", _regression_shape, overwrite=True
    )


def _regression_shape(operator: Any) -> None:
    from onnxmltools.convert.common.data_types import FloatTensorType

    operator.outputs[0].type = FloatTensorType([operator.inputs[0].type.shape[0], 1])


def _string_indexer(scope: Any, operator: Any, container: Any) -> None:
    op = operator.raw_operator
    keep = op.getOrDefault("handleInvalid") == "keep"
    for source, target, labels in zip(
        operator.inputs, operator.outputs, op.labelsArray, strict=True
    ):
        container.add_node(
            "LabelEncoder",
            [source.full_name],
            [target.full_name],
            op_domain=_ML,
            op_version=2,
            name=scope.get_unique_operator_name("StringIndexer"),
            keys_strings=list(labels),
            values_int64s=list(range(len(labels))),
            default_int64=len(labels) if keep else -1,
        )


def _scaler(scope: Any, operator: Any, container: Any) -> None:
    """``(x - offset) * scale + shift``, with Spark's answer for a constant column."""
    from pyspark.ml.feature import StandardScalerModel

    op = operator.raw_operator
    if isinstance(op, StandardScalerModel):
        std = op.std.toArray()
        offset = op.mean.toArray() if op.getOrDefault("withMean") else np.zeros_like(std)
        scale = np.divide(1.0, std, out=np.zeros_like(std), where=std != 0)
        if not op.getOrDefault("withStd"):
            scale = np.ones_like(std)
        shift = np.zeros_like(std)
    else:
        low, high = op.originalMin.toArray(), op.originalMax.toArray()
        out_min, out_max = float(op.getOrDefault("min")), float(op.getOrDefault("max"))
        spread = high - low
        offset = low
        scale = np.divide(out_max - out_min, spread, out=np.zeros_like(spread), where=spread != 0)
        shift = np.where(spread != 0, out_min, (out_min + out_max) / 2)
    steps = (("Sub", offset), ("Mul", scale), ("Add", shift))
    current = operator.inputs[0].full_name
    for i, (op_type, values) in enumerate(steps):
        constant = scope.get_unique_variable_name(f"scaler_{op_type.lower()}")
        container.add_initializer(
            constant, TensorProto.FLOAT, [len(values)], [float(v) for v in values]
        )
        result = (
            operator.outputs[0].full_name
            if i == len(steps) - 1
            else scope.get_unique_variable_name("scaled")
        )
        container.add_node(
            op_type, [current, constant], [result], name=scope.get_unique_operator_name(op_type)
        )
        current = result


def _logistic_regression(scope: Any, operator: Any, container: Any) -> None:
    """Binomial: sigmoid of ``[-margin, margin]``; multinomial: softmax of the margins."""
    op = operator.raw_operator
    weights = op.coefficientMatrix.toArray()
    intercepts = op.interceptVector.toArray()
    binomial = weights.shape[0] == 1  # (a multinomial fit of two classes has two rows)
    if binomial:
        weights = np.vstack([-weights, weights])
        intercepts = np.concatenate([-intercepts, intercepts])
    container.add_node(
        "LinearClassifier",
        [operator.inputs[0].full_name],
        [operator.outputs[0].full_name, operator.outputs[1].full_name],
        op_domain=_ML,
        name=scope.get_unique_operator_name("LinearClassifier"),
        coefficients=weights.ravel().tolist(),
        intercepts=intercepts.tolist(),
        multi_class=1,
        classlabels_ints=list(range(int(op.numClasses))),
        post_transform="LOGISTIC" if binomial else "SOFTMAX",
    )


@dataclass(frozen=True)
class _Node:
    """One node of a Spark tree as its model data stores it."""

    left: int  # -1 for a leaf
    right: int
    feature: int
    categorical: bool
    split: tuple[float, ...]  # the threshold, or the categories that go left
    prediction: float
    stats: tuple[float, ...]  # per-class counts (classification)


def _trees(op: Any, session: Any) -> list[dict[int, _Node]]:
    """The trees of a tree model or ensemble, read from the data it saves."""
    with tempfile.TemporaryDirectory(prefix="mlmanager-spark-trees-") as path:
        op.write().overwrite().save(path)
        rows = session.read.parquet(os.path.join(path, "data")).collect()
    grouped: dict[int, list[Any]] = {}
    for row in rows:
        if "treeID" in row.__fields__:
            grouped.setdefault(int(row.treeID), []).append(row.nodeData)
        else:
            grouped.setdefault(0, []).append(row)
    return [
        {
            int(n.id): _Node(
                left=int(n.leftChild),
                right=int(n.rightChild),
                feature=int(n.split.featureIndex),
                categorical=int(n.split.numCategories) >= 0,
                split=tuple(float(v) for v in n.split.leftCategoriesOrThreshold),
                prediction=float(n.prediction),
                stats=tuple(float(v) for v in (n.impurityStats or ())),
            )
            for n in grouped[tree]
        }
        for tree in sorted(grouped)
    ]


def _tree_weights(op: Any, count: int) -> list[float]:
    """GBT: its tree weights (summed); a forest: the mean; one tree: itself."""
    from pyspark.ml.classification import GBTClassificationModel
    from pyspark.ml.regression import GBTRegressionModel

    if isinstance(op, GBTClassificationModel | GBTRegressionModel):
        return [float(w) for w in op.treeWeights]
    return [1.0 / count] * count


_NodeRow = tuple[int, int, int, str, float, int, int]  # tree, id, feature, mode, value, true, false


def _ensemble_attributes(
    trees: list[dict[int, _Node]], weights: list[float], classes: int | None
) -> dict[str, list[Any]]:
    """TreeEnsembleClassifier (``classes``) or TreeEnsembleRegressor attributes.

    Leaves of a classifier hold the class frequencies (Spark's probability), of a
    regressor the value; both times the tree's weight.
    """
    target = "class" if classes else "target"
    nodes: list[_NodeRow] = []
    leaves: dict[str, list[Any]] = {f"{target}_{k}": [] for k in ("treeids", "nodeids", "ids")}
    leaves[f"{target}_weights"] = []
    for tree_id, (tree, weight) in enumerate(zip(trees, weights, strict=True)):
        for me, values in _add_tree(tree_id, tree, nodes, classes is not None):
            for k, value in enumerate(values):
                leaves[f"{target}_treeids"].append(tree_id)
                leaves[f"{target}_nodeids"].append(me)
                leaves[f"{target}_ids"].append(k)
                leaves[f"{target}_weights"].append(value * weight)
    nodes.sort()
    columns = list(zip(*nodes, strict=True))
    return {
        "nodes_treeids": list(columns[0]),
        "nodes_nodeids": list(columns[1]),
        "nodes_featureids": list(columns[2]),
        "nodes_modes": list(columns[3]),
        "nodes_values": list(columns[4]),
        "nodes_truenodeids": list(columns[5]),
        "nodes_falsenodeids": list(columns[6]),
        **leaves,
    }


def _add_tree(
    tree_id: int, tree: dict[int, _Node], nodes: list[_NodeRow], classifier: bool
) -> list[tuple[int, list[float]]]:
    """Append the tree's nodes (numbered in preorder from 0, the root); its leaves as
    (ONNX node id, values). A categorical split becomes a chain of ``==`` nodes, one per
    category that goes left, ending on the right child."""
    ids = itertools.count()
    leaves: list[tuple[int, list[float]]] = []

    def visit(spark_id: int) -> int:
        node = tree[spark_id]
        if node.left < 0:
            me = next(ids)
            nodes.append((tree_id, me, 0, "LEAF", 0.0, 0, 0))
            total = sum(node.stats)
            if not classifier:
                leaves.append((me, [node.prediction]))
            else:
                leaves.append((me, [s / total if total else s for s in node.stats]))
            return me
        chain = [next(ids) for _ in (node.split if node.categorical else (0,))]
        left, right = visit(node.left), visit(node.right)
        if not node.categorical:
            leq = (tree_id, chain[0], node.feature, "BRANCH_LEQ", node.split[0], left, right)
            nodes.append(leq)
            return chain[0]
        for i, (me, category) in enumerate(zip(chain, node.split, strict=True)):
            otherwise = chain[i + 1] if i + 1 < len(chain) else right
            nodes.append((tree_id, me, node.feature, "BRANCH_EQ", category, left, otherwise))
        return chain[0]

    visit(0)
    return leaves


def _ensemble(op: Any, operator: Any, classes: int | None) -> dict[str, list[Any]]:
    trees = _trees(op, operator.raw_params["SparkSession"])
    return _ensemble_attributes(trees, _tree_weights(op, len(trees)), classes)


def _tree_classifier(scope: Any, operator: Any, container: Any) -> None:
    op = operator.raw_operator
    classes = int(op.numClasses)
    container.add_node(
        "TreeEnsembleClassifier",
        [operator.inputs[0].full_name],
        [operator.outputs[0].full_name, operator.outputs[1].full_name],
        op_domain=_ML,
        name=scope.get_unique_operator_name("TreeEnsembleClassifier"),
        classlabels_int64s=list(range(classes)),
        post_transform="NONE",
        **_ensemble(op, operator, classes),
    )


def _regression_trees(scope: Any, operator: Any, container: Any, output: str) -> None:
    container.add_node(
        "TreeEnsembleRegressor",
        [operator.inputs[0].full_name],
        [output],
        op_domain=_ML,
        name=scope.get_unique_operator_name("TreeEnsembleRegressor"),
        n_targets=1,
        aggregate_function="SUM",
        post_transform="NONE",
        **_ensemble(operator.raw_operator, operator, None),
    )


def _tree_regressor(scope: Any, operator: Any, container: Any) -> None:
    _regression_trees(scope, operator, container, operator.outputs[0].full_name)


def _gbt_classifier(scope: Any, operator: Any, container: Any) -> None:
    """Spark's GBT classifier: raw ``[-m, m]`` for the trees' sum ``m``, probability
    ``1 / (1 + exp(-2 raw))``, label the argmax of raw."""
    margin = scope.get_unique_variable_name("gbt_margin")
    _regression_trees(scope, operator, container, margin)
    names = {n: scope.get_unique_variable_name(f"gbt_{n}") for n in ("neg", "raw", "two", "twice")}
    container.add_initializer(names["two"], TensorProto.FLOAT, [], [2.0])
    for op_type, inputs, output, attrs in (
        ("Neg", [margin], names["neg"], {}),
        ("Concat", [names["neg"], margin], names["raw"], {"axis": 1}),
        ("Mul", [names["raw"], names["two"]], names["twice"], {}),
        ("Sigmoid", [names["twice"]], operator.outputs[1].full_name, {}),
        ("ArgMax", [names["raw"]], operator.outputs[0].full_name, {"axis": 1, "keepdims": 0}),
    ):
        container.add_node(
            op_type, inputs, [output], name=scope.get_unique_operator_name(op_type), **attrs
        )
