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


def _for_our_store(
    original: Callable[..., Any],
    endpoint: str,
    handle: Callable[[DatabaseArtifactRepository, str], Any],
) -> Callable[..., Any]:
    """MLflow's view ``original`` of ``endpoint``, with requests for our store answered by
    ``handle(repo, path)`` (``path`` checked and scoped as MLflow's views do); ``handle``
    answering None, or another store, leaves the request to MLflow's view."""
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
    def view(artifact_path: str) -> Any:
        repo = _get_artifact_repo_mlflow_artifacts()
        if isinstance(repo, DatabaseArtifactRepository):
            path = validate_path_is_safe(artifact_path)
            answer = handle(repo, cast(str, _get_workspace_scoped_repo_path_if_enabled(path)))
            if answer is not None:
                return answer
        return original(artifact_path)

    view.__name__ = endpoint
    setattr(view, _WRAPPED, True)
    return view


def streamed_download(original: Callable[..., Any]) -> Callable[..., Any]:
    """MLflow's download view ``original``, streaming the files of our store."""

    def download(repo: DatabaseArtifactRepository, path: str) -> Any:
        if request.range is not None:
            return None
        # The file's row and first chunk come now: a database that does not answer is
        # MLflow's retryable 503, not a response cut short.
        with Translated():
            opened = repo.store.open(repo.key(path))
        if opened is None:  # a folder or nothing: MLflow's view answers those
            return None
        return _response(*opened, path)

    return _for_our_store(original, ENDPOINT, download)


def socket_upload(original: Callable[..., Any]) -> Callable[..., Any]:
    """MLflow's upload view ``original``, reading the body of a file for our store from
    gunicorn's socket in large reads (``request_body.socket_body``)."""
    from mlflow.protos.mlflow_artifacts_pb2 import UploadArtifact
    from mlflow.server.handlers import _wrap_response

    def upload(repo: DatabaseArtifactRepository, path: str) -> Any:
        head, tail = posixpath.split(path)  # as MLflow's view: folder and file name
        repo.log_artifact_from_stream(
            socket_body(request.stream), tail, head or None, expected_size=request.content_length
        )
        return _wrap_response(UploadArtifact.Response())

    return _for_our_store(original, UPLOAD_ENDPOINT, upload)


def install(app: Any) -> None:
    """Route MLflow's download and upload endpoints of ``app`` through
    :func:`streamed_download` and :func:`socket_upload`."""
    app.view_functions[ENDPOINT] = streamed_download(app.view_functions[ENDPOINT])
    app.view_functions[UPLOAD_ENDPOINT] = socket_upload(app.view_functions[UPLOAD_ENDPOINT])
