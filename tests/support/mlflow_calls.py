"""Counting what a piece of code asks of MLflow: tracking-store calls and artifact downloads.

The tests' tracking store is MLflow's SQLAlchemy store (a SQLite file) with artifacts in a
local directory. Against a tracking server each public store method is one REST request
(get_run, get_logged_model, get_model_version...), and each artifact-repository download
is one download from the artifact store, so counting them in-process counts what a
worker would send to a server. Only the outermost call is counted (store methods call
each other, and a ``models:/`` repository hands its download to the run's repository),
and only downloads out of the store's artifact root (a model already on local disk read
by its path is not a download).
"""

from __future__ import annotations

import functools
import inspect
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from unittest import mock


@dataclass
class MlflowCalls:
    """What was asked: store methods by name, and the URIs downloaded from."""

    tracking: Counter[str] = field(default_factory=Counter)
    downloads: list[str] = field(default_factory=list)

    @property
    def tracking_calls(self) -> int:
        return sum(self.tracking.values())

    def describe(self) -> str:
        calls = ", ".join(f"{name} x{n}" for name, n in sorted(self.tracking.items()))
        return (
            f"{self.tracking_calls} tracking calls ({calls}); "
            f"{len(self.downloads)} downloads ({', '.join(self.downloads)})"
        )


@contextmanager
def counting_mlflow_calls(artifact_root: Path) -> Iterator[MlflowCalls]:
    """Count the tracking-store calls and the downloads out of ``artifact_root`` in the block.

    (MLflow's stores are imported here, in the test, where its warnings are filtered.)
    """
    from mlflow.store.artifact.artifact_repo import ArtifactRepository
    from mlflow.store.artifact.local_artifact_repo import LocalArtifactRepository
    from mlflow.store.artifact.models_artifact_repo import ModelsArtifactRepository
    from mlflow.store.artifact.runs_artifact_repo import RunsArtifactRepository
    from mlflow.store.model_registry.sqlalchemy_store import SqlAlchemyStore as RegistryStore
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore as TrackingStore

    repositories = (
        ArtifactRepository,
        LocalArtifactRepository,
        RunsArtifactRepository,
        ModelsArtifactRepository,
    )
    calls = MlflowCalls()
    root = str(artifact_root.resolve())
    # Apart: resolving a runs:/ download asks the store for the run (a request of its own).
    store_depth, download_depth = threading.local(), threading.local()

    def outermost(
        depth: threading.local, count: Callable[[Any, tuple[Any, ...]], None], method: Any
    ) -> Any:
        @functools.wraps(method)
        def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
            level = getattr(depth, "level", 0)
            if level == 0:
                count(self, args)
            depth.level = level + 1
            try:
                return method(self, *args, **kwargs)
            finally:
                depth.level = level

        return wrapper

    def store_call(name: str) -> Callable[[Any, tuple[Any, ...]], None]:
        return lambda _self, _args: calls.tracking.update([name])

    def download(repo: Any, args: tuple[Any, ...]) -> None:
        where = str(getattr(repo, "artifact_uri", ""))
        local = getattr(repo, "artifact_dir", None)
        from_store = not isinstance(repo, LocalArtifactRepository) or (
            local is not None and str(Path(local).resolve()).startswith(root)
        )
        if from_store:
            calls.downloads.append(f"{where}/{args[0] if args else ''}".rstrip("/"))

    with ExitStack() as patches:
        for store in (TrackingStore, RegistryStore):
            for name, method in inspect.getmembers(store, inspect.isfunction):
                if not name.startswith("_") and name in vars(store):
                    patches.enter_context(
                        mock.patch.object(
                            store, name, outermost(store_depth, store_call(name), method)
                        )
                    )
        for repository in repositories:
            if "download_artifacts" in vars(repository):
                method = vars(repository)["download_artifacts"]
                patches.enter_context(
                    mock.patch.object(
                        repository,
                        "download_artifacts",
                        outermost(download_depth, download, method),
                    )
                )
        yield calls
