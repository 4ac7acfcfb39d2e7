"""MLflow's artifact download and upload routes, streamed straight from/to the database.

MLflow's ``GET /mlflow-artifacts/artifacts/<path>`` copies a file of any store but the
local one into a temporary file, then sends that file: for ``mlmanager-db:`` the whole
file went to disk and back before the first byte reached the client (measured with
``make bench BENCH=artifacts``). :func:`streamed_download` wraps that view: a file of our
store is sent as its chunks come out of the database, with its size as Content-Length.
Everything else (another store, a folder, a missing path, a Range request) goes to
MLflow's own view unchanged. :func:`socket_upload` wraps the upload view the same way:
a file for our store is read from gunicorn's socket in large reads
(``mlflow_server.request_body``) as it goes into the database.

The guarantees stay those of ``ArtifactStore.read``: the bytes are checked against the
stored sha256 as they stream, and the last chunk is held back until that check passed, so
a corrupt or replaced file never reaches the client whole (the connection closes short of
its Content-Length, which clients report as an error). A database that does not answer
before the first byte is MLflow's retryable 503.
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable, Iterator
from typing import Any, cast

from flask import Response, request
from werkzeug.wsgi import ClosingIterator

from mlflow_server.request_body import socket_body
from shared.artifacts import ArtifactFile, Chunks, DatabaseArtifactRepository, Translated

ENDPOINT = "_download_artifact"
UPLOAD_ENDPOINT = "_upload_artifact"
_WRAPPED = "_mlmanager_streamed"


def _held_back(chunks: Iterator[bytes]) -> Iterator[bytes]:
    """``chunks`` one behind: the last goes out only once ``chunks`` ended without error
    (``ArtifactStore.read`` checks size and sha256 at its end)."""
    previous: bytes | None = None
    for data in chunks:
        if previous is not None:
            yield previous
        previous = data
    if previous is not None:
        yield previous


def _response(record: ArtifactFile, chunks: Chunks, artifact_path: str) -> Response:
    from mlflow.server.handlers import _response_with_file_attachment_headers

    # The server closes the body when it is done, sent whole or not (a client gone, a
    # HEAD request): the connection goes back to the pool either way.
    body = ClosingIterator(_held_back(chunks), [chunks.close])
    response = Response(body, direct_passthrough=True)
    response.content_length = record.size
    response.last_modified = record.mtime
    response.cache_control.no_cache = True
    return _response_with_file_attachment_headers(artifact_path, response)


def streamed_download(original: Callable[..., Any]) -> Callable[..., Any]:
    """MLflow's download view ``original``, streaming the files of our store."""
    from mlflow.server.handlers import (
        _disable_unless_serve_artifacts,
        _get_artifact_repo_mlflow_artifacts,
        _get_workspace_scoped_repo_path_if_enabled,
        catch_mlflow_exception,
    )
    from mlflow.utils.uri import validate_path_is_safe

    if getattr(original, _WRAPPED, False):  # the factory ran twice in one process
        return original

    @catch_mlflow_exception
    @_disable_unless_serve_artifacts
    def download(artifact_path: str) -> Any:
        repo = _get_artifact_repo_mlflow_artifacts()
        if not isinstance(repo, DatabaseArtifactRepository) or request.range is not None:
            return original(artifact_path)
        path = validate_path_is_safe(artifact_path)
        path = cast(str, _get_workspace_scoped_repo_path_if_enabled(path))
        key = repo.key(path)
        # The file's row and first chunk come now: a database that does not answer is
        # MLflow's retryable 503, not a response cut short.
        with Translated():
            opened = repo.store.open(key)
        if opened is None:  # a folder or nothing: MLflow's view answers those
            return original(artifact_path)
        return _response(*opened, path)

    download.__name__ = ENDPOINT
    setattr(download, _WRAPPED, True)
    return download


def socket_upload(original: Callable[..., Any]) -> Callable[..., Any]:
    """MLflow's upload view ``original``, reading the body of a file for our store from
    gunicorn's socket in large reads (``request_body.socket_body``)."""
    from mlflow.protos.mlflow_artifacts_pb2 import UploadArtifact
    from mlflow.server.handlers import (
        _disable_unless_serve_artifacts,
        _get_artifact_repo_mlflow_artifacts,
        _get_workspace_scoped_repo_path_if_enabled,
        _wrap_response,
        catch_mlflow_exception,
    )
    from mlflow.utils.uri import validate_path_is_safe

    if getattr(original, _WRAPPED, False):
        return original

    @catch_mlflow_exception
    @_disable_unless_serve_artifacts
    def upload(artifact_path: str) -> Any:
        repo = _get_artifact_repo_mlflow_artifacts()
        if not isinstance(repo, DatabaseArtifactRepository):
            return original(artifact_path)
        # As MLflow's view: the path checked, scoped, split into folder and file name.
        path = cast(
            str, _get_workspace_scoped_repo_path_if_enabled(validate_path_is_safe(artifact_path))
        )
        head, tail = posixpath.split(path)
        repo.log_artifact_from_stream(
            socket_body(request.stream), tail, head or None, expected_size=request.content_length
        )
        return _wrap_response(UploadArtifact.Response())

    upload.__name__ = UPLOAD_ENDPOINT
    setattr(upload, _WRAPPED, True)
    return upload


def install(app: Any) -> None:
    """Route MLflow's download and upload endpoints of ``app`` through
    :func:`streamed_download` and :func:`socket_upload`."""
    app.view_functions[ENDPOINT] = streamed_download(app.view_functions[ENDPOINT])
    app.view_functions[UPLOAD_ENDPOINT] = socket_upload(app.view_functions[UPLOAD_ENDPOINT])
