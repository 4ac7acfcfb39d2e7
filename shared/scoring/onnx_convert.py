"""Converting estimators to ONNX: skl2onnx for scikit-learn, onnxmltools for XGBoost/LightGBM.

Each converter is tried with the input layouts and precisions that may fit; the
caller checks every candidate against the model and keeps the first that agrees.

scikit-learn's trees do not compare a feature with their threshold in the
input's precision: they cast the input to float32 and compare it with a double
threshold. skl2onnx reproduces that only for float inputs (it moves each
threshold to the float32 that splits the same way); with double inputs it
rounds the threshold to float32 and compares the double, which sends values
next to a split the other way (a breast_cancer forest stored 0.6333 for
scikit-learn's 0.6667). Double inputs are still what the rest of a pipeline
needs (a StandardScaler computes in double before the forest casts), so the
tree converters are wrapped (``_float32_trees``): the tree is converted for
float32 input, then given the double threshold that splits every double as its
float32 cast would (``_splits_in_double``), forests get their leaf
probabilities as doubles (onnxruntime then sums in double, as scikit-learn
does), the label is the first class of highest probability (scikit-learn's
tie-break), and NaN goes down scikit-learn's branch for a missing value, which
skl2onnx leaves out (NaN always went right).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
import onnxmltools
import onnxruntime as ort
from onnx import TensorProto
from onnxmltools.convert.common.data_types import FloatTensorType as MlFloatTensorType
from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import (
    DoubleTensorType,
    FloatTensorType,
    StringTensorType,
    guess_numpy_type,
)

from shared.scoring.flavors import KindInfo, LoadedModel
from shared.scoring.kinds import Column, ModelKind


@dataclass
class Conversion:
    """The ONNX conversions to try, most faithful first, made one at a time when asked
    (a 500-tree forest takes seconds per conversion); ``failures`` says why the ones
    tried so far did not convert."""

    attempts: list[Attempt]
    info: KindInfo
    failures: list[str] = field(default_factory=list)

    def candidates(self) -> Iterator[tuple[str, bytes]]:
        """(what the conversion is, the ONNX model) for each that onnxruntime can load."""
        for label, attempt in self.attempts:
            # Converters fail with many exception types (missing shape calculator,
            # unsupported option, NotImplementedError...): each only means "not this way".
            try:
                model = attempt()
                payload = _keep_outputs(model, self.info).SerializeToString()
                ort.InferenceSession(payload, providers=["CPUExecutionProvider"])
            except Exception as exc:
                self.failures.append(f"{label}: {type(exc).__name__}: {exc}")
                continue
            yield label, payload


def convert(loaded: LoadedModel, info: KindInfo, inputs: tuple[Column, ...]) -> Conversion:
    """The ONNX conversions of the model that the converters may produce."""
    if loaded.flavor == "sklearn":
        attempts = list(_sklearn_attempts(loaded.model, info, inputs))
    elif loaded.flavor in ("xgboost", "lightgbm"):
        if info.method == "transform" or any(c.sql_type.is_text for c in inputs):
            reason = "onnxmltools converts only numeric inputs with predict or predict_proba"
            return Conversion([], info, [reason])
        attempts = list(_boosting_attempts(loaded.flavor, loaded.model, inputs))
    elif loaded.flavor == "keras":
        from shared.scoring.keras_model import onnx_attempts

        attempts = list(onnx_attempts(loaded.model, inputs))
    elif loaded.flavor == "spark":
        from shared.scoring.spark_model import onnx_attempts as spark_attempts

        attempts = list(spark_attempts(loaded.model, inputs))
    else:
        return Conversion([], info, [f"no ONNX converter for the {loaded.flavor} flavor"])
    return Conversion(attempts, info)


Attempt = tuple[str, Callable[[], onnx.ModelProto]]


def _sklearn_attempts(model: Any, info: KindInfo, inputs: tuple[Column, ...]) -> Iterator[Attempt]:
    options = (
        {id(model): {"zipmap": False}} if info.classes or info.method == "predict_proba" else {}
    )
    has_text = any(c.sql_type.is_text for c in inputs)
    # Double inputs with float32 trees first: scikit-learn's own arithmetic. The plain
    # conversions follow for models the wrapped converters do not take.
    for tensor_type, trees in (
        (DoubleTensorType, "float32 trees"),
        (FloatTensorType, None),
        (DoubleTensorType, None),
    ):
        layouts = [("one input per column", _per_column_types(inputs, tensor_type))]
        if not has_text:
            layouts.insert(0, ("one input", [("X", tensor_type([None, len(inputs)]))]))
        custom = _tree_converters() if trees else None
        for layout, initial_types in layouts:

            def attempt(
                initial_types: list[tuple[str, Any]] = initial_types,
                custom: dict[type, Any] | None = custom,
            ) -> onnx.ModelProto:
                converted = convert_sklearn(
                    model,
                    initial_types=initial_types,
                    options=options,
                    custom_conversion_functions=custom,
                )
                return _named_as_given(_with_ml_opset_3(converted), initial_types)

            precision = ", ".join(filter(None, [tensor_type.__name__, trees]))
            yield f"skl2onnx ({layout}, {precision})", attempt


def _tree_converters() -> dict[type, Callable[..., None]]:
    """skl2onnx's converters of scikit-learn's trees and forests, wrapped by ``_float32_trees``."""
    from skl2onnx.operator_converters import decision_tree, gradient_boosting, random_forest
    from sklearn import ensemble, tree

    forest_classifier = random_forest.convert_sklearn_random_forest_classifier
    forest_regressor = random_forest.convert_sklearn_random_forest_regressor_converter
    originals: dict[type, Callable[..., None]] = {
        ensemble.RandomForestClassifier: forest_classifier,
        ensemble.ExtraTreesClassifier: forest_classifier,
        ensemble.RandomForestRegressor: forest_regressor,
        ensemble.ExtraTreesRegressor: forest_regressor,
        ensemble.GradientBoostingClassifier: (
            gradient_boosting.convert_sklearn_gradient_boosting_classifier
        ),
        ensemble.GradientBoostingRegressor: (
            gradient_boosting.convert_sklearn_gradient_boosting_regressor
        ),
        tree.DecisionTreeClassifier: decision_tree.convert_sklearn_decision_tree_classifier,
        tree.DecisionTreeRegressor: decision_tree.convert_sklearn_decision_tree_regressor,
        tree.ExtraTreeClassifier: decision_tree.convert_sklearn_decision_tree_classifier,
        tree.ExtraTreeRegressor: decision_tree.convert_sklearn_decision_tree_regressor,
    }
    return {kind: _float32_trees(original) for kind, original in originals.items()}


_TREE_OPS = ("TreeEnsembleClassifier", "TreeEnsembleRegressor")


def _float32_trees(original: Callable[..., None]) -> Callable[..., None]:
    """A tree converter that compares as scikit-learn does (see the module's docstring)."""

    def converter(scope: Any, operator: Any, container: Any) -> None:
        source = operator.inputs[0]
        first = len(container.nodes)
        if guess_numpy_type(source.type) != np.float64:
            original(scope, operator, container)
            _missing_goes_as_sklearn(operator.raw_operator, container.nodes[first:])
            return
        as_float = scope.get_unique_variable_name(f"{source.onnx_name}_float32")
        container.add_node(
            "Cast",
            source.full_name,
            as_float,
            to=TensorProto.FLOAT,
            name=scope.get_unique_operator_name("CastToFloat32"),
        )
        # The converter picks its precision from its variables' types: float32 while it
        # runs (the input is read through the cast, double outputs are written as
        # float32 under other names and cast back), the declared types afterwards.
        declared = source.type
        doubles = [out for out in operator.outputs if guess_numpy_type(out.type) == np.float64]
        renamed = []
        classes = _class_labels(scope, operator)
        if classes is not None:  # the label comes from the probabilities, below
            label = operator.outputs[0]
            label_name = label.full_name
            label.set_onnx_name(scope.get_unique_variable_name(f"{label_name}_by_trees"))
        source.set_type(FloatTensorType(declared.shape))
        for out in doubles:
            renamed.append((out, out.full_name, out.type))
            out.set_onnx_name(scope.get_unique_variable_name(f"{out.full_name}_float32"))
            out.set_type(FloatTensorType(out.type.shape))
        try:
            original(scope, operator, container)
        finally:
            source.set_type(declared)
            singles = []
            for out, name, kind in renamed:
                singles.append((out.full_name, name))
                out.set_onnx_name(name)
                out.set_type(kind)
            if classes is not None:
                label.set_onnx_name(label_name)
        added = container.nodes[first + 1 :]
        for node in added:
            reads_double = node.op_type in _TREE_OPS and _splits_in_double(node)
            if reads_double and node.op_type == "TreeEnsembleClassifier":
                _forest_weights_in_double(node, operator.raw_operator)
            for i, name in enumerate(node.input):
                if name == source.full_name and not reads_double:
                    node.input[i] = as_float
        for single, name in singles:
            container.add_node(
                "Cast",
                single,
                name,
                to=TensorProto.DOUBLE,
                name=scope.get_unique_operator_name("CastToDouble"),
            )
        if classes is not None:
            # scikit-learn's label is the first class of highest probability; the
            # tree operator breaks a 0.5/0.5 tie its own way.
            best = scope.get_unique_variable_name("best_class")
            container.add_node(
                "ArgMax",
                operator.outputs[1].full_name,
                best,
                axis=1,
                keepdims=0,
                name=scope.get_unique_operator_name("ArgMax"),
            )
            table, kind, values = classes
            container.add_initializer(table, kind, [len(values)], values)
            container.add_node(
                "Gather",
                [table, best],
                label_name,
                axis=0,
                name=scope.get_unique_operator_name("Gather"),
            )
        _missing_goes_as_sklearn(operator.raw_operator, added)

    return converter


def _class_labels(scope: Any, operator: Any) -> tuple[str, int, list[Any]] | None:
    """(initializer name, ONNX type, labels) of a classifier with integer or text classes."""
    model = operator.raw_operator
    if len(operator.outputs) < 2 or not hasattr(model, "classes_"):
        return None
    labels = np.asarray(model.classes_)
    if labels.ndim != 1:  # multi-output
        return None
    name = scope.get_unique_variable_name("class_labels")
    if labels.dtype.kind in "iub":
        return name, TensorProto.INT64, [int(v) for v in labels.tolist()]
    if labels.dtype.kind in "OUS" and all(isinstance(v, str) for v in labels.tolist()):
        return name, TensorProto.STRING, [v.encode() for v in labels.tolist()]
    return None


def _splits_in_double(node: Any) -> bool:
    """Make a float32 tree node read the double input and split it the same way; whether done.

    skl2onnx's float32 threshold ``w`` splits as scikit-learn does: ``(float)x <= w``.
    For a double ``x`` that holds exactly when ``x`` is at most the midpoint between
    ``w`` and the next float32 (ties round to the even one, so the midpoint itself
    belongs to ``w`` only when ``w`` is even). With such double thresholds
    (``ai.onnx.ml`` 3) onnxruntime also sums the trees in double instead of float32:
    a 500-tree forest's probabilities then differ from scikit-learn's by about
    1e-7 instead of 6e-6.
    """
    attributes = {a.name: a for a in node.attribute}
    modes = set(attributes["nodes_modes"].strings)
    if "nodes_values" not in attributes or not modes <= {b"BRANCH_LEQ", b"LEAF"}:
        return False
    singles = np.array(attributes["nodes_values"].floats, dtype=np.float32)
    above = np.nextafter(singles, np.float32(np.inf))
    middle = (singles.astype(np.float64) + above.astype(np.float64)) / 2
    even = (singles.view(np.uint32) & 1) == 0
    doubles = np.where(even, middle, np.nextafter(middle, -np.inf))
    doubles = np.where(np.isfinite(above), doubles, singles.astype(np.float64))
    node.attribute.remove(attributes["nodes_values"])
    tensor = onnx.helper.make_tensor(
        "nodes_values", TensorProto.DOUBLE, [len(doubles)], doubles.tolist()
    )
    node.attribute.append(onnx.helper.make_attribute("nodes_values_as_tensor", tensor))
    return True


def _forest_weights_in_double(node: Any, model: Any) -> None:
    """A forest's leaf probabilities as doubles, summed in double as scikit-learn does.

    As float32 (1/30 is 0.033333335), fifteen of thirty trees make 0.50000003
    and a 0.5/0.5 tie goes to the second class. Each weight is the leaf's class
    fraction over the number of trees (skl2onnx keeps only the second class of a
    binary forest); a weight that is not the float32 skl2onnx wrote is left alone.
    """
    from sklearn.ensemble import ExtraTreesClassifier, RandomForestClassifier
    from sklearn.tree import DecisionTreeClassifier, ExtraTreeClassifier

    if isinstance(model, (RandomForestClassifier, ExtraTreesClassifier)):
        trees = [e.tree_ for e in model.estimators_]
    elif isinstance(model, (DecisionTreeClassifier, ExtraTreeClassifier)):
        trees = [model.tree_]
    else:
        return
    attributes = {a.name: a for a in node.attribute}
    if "class_weights" not in attributes or getattr(model, "n_outputs_", 1) != 1:
        return
    singles = np.array(attributes["class_weights"].floats, dtype=np.float32)
    shift = 1 if len(model.classes_) == 2 else 0
    doubles = []
    for tree, leaf, k in zip(
        attributes["class_treeids"].ints,
        attributes["class_nodeids"].ints,
        attributes["class_ids"].ints,
        strict=True,
    ):
        fractions = np.asarray(trees[tree].value[leaf], dtype=np.float64).ravel()
        doubles.append(fractions[k + shift] / fractions.sum() / len(trees))
    if not np.array_equal(np.array(doubles, dtype=np.float32), singles):
        return
    node.attribute.remove(attributes["class_weights"])
    tensor = onnx.helper.make_tensor("class_weights", TensorProto.DOUBLE, [len(doubles)], doubles)
    node.attribute.append(onnx.helper.make_attribute("class_weights_as_tensor", tensor))


def _named_as_given(
    model: onnx.ModelProto, initial_types: list[tuple[str, Any]]
) -> onnx.ModelProto:
    """The graph's inputs under the names given, which the scorer feeds by name.

    skl2onnx turns ``sepal length (cm)`` into ``sepal_length__cm_``.
    """
    renamed = {
        graph_input.name: name
        for graph_input, (name, _) in zip(model.graph.input, initial_types, strict=True)
        if graph_input.name != name
    }
    for graph_input in model.graph.input:
        graph_input.name = renamed.get(graph_input.name, graph_input.name)
    for node in model.graph.node:
        for i, name in enumerate(node.input):
            node.input[i] = renamed.get(name, name)
    return model


def _with_ml_opset_3(model: onnx.ModelProto) -> onnx.ModelProto:
    """Declare ``ai.onnx.ml`` 3 when a tree operator holds double thresholds."""
    if any(a.name.endswith("_as_tensor") for n in model.graph.node for a in n.attribute):
        for opset in model.opset_import:
            if opset.domain == "ai.onnx.ml":
                opset.version = max(opset.version, 3)
    return model


def _missing_goes_as_sklearn(model: Any, nodes: list[Any]) -> None:
    """Send NaN down the branch scikit-learn sends it at every split of ``model``'s trees.

    skl2onnx numbers the trees in the order of ``estimators_`` (row by row for
    gradient boosting) and their nodes as scikit-learn does.
    """
    estimators = np.ravel(model.estimators_) if hasattr(model, "estimators_") else [model]
    goes_left = [np.asarray(e.tree_.missing_go_to_left) for e in estimators]
    for node in nodes:
        if node.op_type not in _TREE_OPS:
            continue
        attributes = {a.name: a for a in node.attribute}
        tracks = attributes.get("nodes_missing_value_tracks_true")
        if tracks is None:
            continue
        tree_ids = attributes["nodes_treeids"].ints
        node_ids = attributes["nodes_nodeids"].ints
        # BRANCH_LEQ's true branch is the left child (x <= threshold).
        values = [int(goes_left[t][n]) for t, n in zip(tree_ids, node_ids, strict=True)]
        del tracks.ints[:]
        tracks.ints.extend(values)


def _per_column_types(inputs: tuple[Column, ...], tensor_type: type) -> list[tuple[str, Any]]:
    return [
        (c.name, StringTensorType([None, 1]) if c.sql_type.is_text else tensor_type([None, 1]))
        for c in inputs
    ]


def _boosting_attempts(flavor: str, model: Any, inputs: tuple[Column, ...]) -> Iterator[Attempt]:
    initial_types = [("X", MlFloatTensorType([None, len(inputs)]))]
    if flavor == "xgboost":
        # onnxmltools reads only the default feature names f0, f1...; inputs go by position.
        unnamed = copy.deepcopy(model)
        unnamed.get_booster().feature_names = None
        yield (
            "onnxmltools (xgboost)",
            lambda: onnxmltools.convert_xgboost(unnamed, initial_types=initial_types),
        )
    else:

        def lightgbm_model() -> onnx.ModelProto:
            return onnxmltools.convert_lightgbm(model, initial_types=initial_types, zipmap=False)

        yield (
            "onnxmltools (lightgbm), double thresholds",
            lambda: _double_thresholds(lightgbm_model(), model),
        )
        yield "onnxmltools (lightgbm)", lightgbm_model


def _double_thresholds(converted: onnx.ModelProto, model: Any) -> onnx.ModelProto:
    """LightGBM's trees reading double inputs and comparing with double thresholds, as
    LightGBM does (onnxmltools rounds both to float32, which sends values within a
    float32 step of a split the other way).

    The tree operators of ``ai.onnx.ml`` 3 hold the thresholds as a double tensor,
    taken from LightGBM's own dump (``trees_to_dataframe``) by walking each tree in
    both forms from its root (true branch = left child); a node whose feature or
    float32 threshold differs from the dump's stops the attempt.
    """
    table = model.booster_.trees_to_dataframe()
    names = list(model.booster_.feature_name())
    dumped: dict[str, tuple[int, float, str | None, str | None]] = {}
    roots: dict[int, str] = {}
    for tree, index, feature, threshold, left, right in zip(
        table["tree_index"],
        table["node_index"],
        table["split_feature"],
        table["threshold"],
        table["left_child"],
        table["right_child"],
        strict=True,
    ):
        roots.setdefault(int(tree), str(index))
        if isinstance(feature, str):
            dumped[str(index)] = (names.index(feature), float(threshold), str(left), str(right))
    tree_nodes = [n for n in converted.graph.node if n.op_type in _TREE_OPS]
    if not tree_nodes:
        raise ValueError("no tree operator in the converted model")
    for node in tree_nodes:
        attributes = {a.name: a for a in node.attribute}
        keys = list(
            zip(attributes["nodes_treeids"].ints, attributes["nodes_nodeids"].ints, strict=True)
        )
        position = {key: i for i, key in enumerate(keys)}
        doubles = [0.0] * len(keys)
        features = attributes["nodes_featureids"].ints
        values = attributes["nodes_values"].floats
        modes = attributes["nodes_modes"].strings
        true_ids = attributes["nodes_truenodeids"].ints
        false_ids = attributes["nodes_falsenodeids"].ints
        for tree in sorted({t for t, _ in keys}):
            pending = [(position[(tree, 0)], roots[tree])]
            while pending:
                i, index = pending.pop()
                if modes[i] == b"LEAF":
                    continue
                feature, threshold, left, right = dumped[index]
                if feature != features[i] or np.float32(threshold) != np.float32(values[i]):
                    raise ValueError(f"node {index} of tree {tree} is not the dump's")
                doubles[i] = threshold
                assert left is not None and right is not None
                pending.append((position[(tree, true_ids[i])], left))
                pending.append((position[(tree, false_ids[i])], right))
        node.attribute.remove(attributes["nodes_values"])
        tensor = onnx.helper.make_tensor(
            "nodes_values", TensorProto.DOUBLE, [len(doubles)], doubles
        )
        node.attribute.append(onnx.helper.make_attribute("nodes_values_as_tensor", tensor))
    for graph_input in converted.graph.input:
        graph_input.type.tensor_type.elem_type = TensorProto.DOUBLE
    return _with_ml_opset_3(converted)


def _keep_outputs(model: onnx.ModelProto, info: KindInfo) -> onnx.ModelProto:
    """Keep only the outputs the runtime reads, in its order.

    Classification: label and probabilities; regression, clustering: the first
    output; multi-output: the last (probabilities, KMeans distances, or the only one).
    """
    outputs = list(model.graph.output)
    if info.kind is ModelKind.CLASSIFICATION:
        keep = outputs[:2] if info.output_names else outputs[:1]
    elif info.kind is ModelKind.MULTI_OUTPUT:
        keep = outputs[-1:]
    else:
        keep = outputs[:1]
    del model.graph.output[:]
    model.graph.output.extend(keep)
    return model
