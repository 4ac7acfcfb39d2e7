"""The model bundle that ``mlrunner serve`` reads, and whether mlrunner can serve a model.

A bundle is one zip holding ``representation.json`` (what ``model_representations``
stores beside the model: format, kind, inputs with their types, classes, the model URI)
and ``payload`` (the ONNX model or the H2O MOJO). Its bytes are the same for the same
representation (fixed timestamps, sorted keys), so the SHA-256 that a deploy records
is the one the serving process checks at start.
"""

from __future__ import annotations

import io
import json
import zipfile

from shared.errors import InvalidPayload
from shared.model_source import ModelSource
from shared.scoring.kinds import ModelKind
from shared.scoring.representation import Representation, RepresentationFormat

# The serving JVM (`mlmanager serve`, the Kubernetes target's pods): a small heap suffices
# (a model plus request buffers), and the serial collector keeps the resident size near
# the heap (measured in tests/bench/bench_serving.py).
SERVE_JAVA_OPTS = ("-Xms64m", "-Xmx512m", "-XX:+UseSerialGC")
METADATA_ENTRY = "representation.json"
PAYLOAD_ENTRY = "payload"
_SERVED_FORMATS = (RepresentationFormat.ONNX, RepresentationFormat.MOJO)
_SERVED_KINDS = (ModelKind.CLASSIFICATION, ModelKind.REGRESSION, ModelKind.CLUSTERING)


def unservable_reason(representation: Representation) -> str | None:
    """Why mlrunner cannot serve this representation (then MLflow's server does), or ``None``."""
    if representation.format not in _SERVED_FORMATS:
        return f"it has no ONNX or MOJO representation (format {representation.format.value})"
    if representation.kind not in _SERVED_KINDS:
        kind = representation.kind.value
        return f"its outputs are {kind} ({representation.method}), not labels or values"
    return None


def servable_representation(source: ModelSource) -> tuple[Representation | None, str]:
    """(the representation mlrunner serves, why) or (``None``, why not: MLflow serves it).

    Built and checked exactly as a database deploy builds it: on the model's input
    example, with the method MLflow's pyfunc calls."""
    from shared.scoring.build import build_representation, source_sample

    try:
        representation = build_representation(source, source_sample(source), _logged_method(source))
    except InvalidPayload as exc:
        return None, exc.message
    reason = unservable_reason(representation)
    if reason is not None:
        return None, reason
    why = f"{representation.format.value} representation of a {representation.flavor} model"
    return representation, why


def _logged_method(source: ModelSource) -> str | None:
    """The method MLflow's pyfunc calls (``pyfunc_predict_fn`` of a scikit-learn model)."""
    method = (source.flavors.get("sklearn") or {}).get("pyfunc_predict_fn")
    return None if method in (None, "predict") else str(method)


def bundle(representation: Representation) -> bytes:
    """The bundle of a representation mlrunner can serve (``unservable_reason`` is ``None``)."""
    metadata = {
        "format": representation.format.value,
        "kind": representation.kind.value,
        "inputs": [{"name": c.name, "sql_type": c.sql_type.value} for c in representation.inputs],
        "outputs": [{"name": c.name, "sql_type": c.sql_type.value} for c in representation.outputs],
        "classes": list(representation.classes),
        "method": representation.method,
        "flavor": representation.flavor,
        "model_uri": representation.model_uri,
        "run_id": representation.run_id,
        "model_version": representation.model_version,
        "payload_sha256": representation.checksum,
    }
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data, compression in (
            (METADATA_ENTRY, json.dumps(metadata, sort_keys=True).encode(), zipfile.ZIP_DEFLATED),
            # A MOJO is a zip already; ONNX weights barely compress.
            (PAYLOAD_ENTRY, representation.payload, zipfile.ZIP_STORED),
        ):
            info = zipfile.ZipInfo(name, (1980, 1, 1, 0, 0, 0))
            info.compress_type = compression
            archive.writestr(info, data)
    return buffer.getvalue()
