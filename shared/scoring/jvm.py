"""Scoring through mlrunner, the JVM scorer, over a py4j gateway (H2O MOJO models).

Runs in the worker, in applications scoring SQLite tables and inside
PostgreSQL's PL/Python, so it imports only the standard library and numpy;
py4j is imported when a JVM model is first scored.

One gateway serves every process of a user on a machine: its port and auth
token are kept in ``<state dir>/gateway.json`` (mode 0600, the directory 0700),
and the first process that needs it starts ``java -jar mlrunner.jar gateway``
under a file lock. A gateway that died is started again on the next call, and
the models it held are loaded again from the representation. A missing Java or
jar, or a gateway that does not come up, is a ``TargetUnavailable`` that says
what to install or set, never a hang: every call has a read timeout.

Rows travel as one packed buffer per batch (``pack``/``unpack``, the format
mlrunner's ``ColumnBlock`` reads), not one call per value.

Settings (environment; inside PostgreSQL also the ``mlmanager.mlrunner_*`` settings):
``MLRUNNER_JAR`` (default ``/opt/mlmanager/mlrunner/mlrunner.jar``, then the
checkout's ``mlrunner/target/mlrunner.jar``), ``MLRUNNER_JAVA`` (default
``java`` on the PATH), ``MLRUNNER_JAVA_OPTS`` (default ``-Xmx1g``),
``MLRUNNER_STATE_DIR`` (default ``<temp>/mlmanager-mlrunner-<uid>``),
``MLRUNNER_TIMEOUT`` (seconds a call may take, default 120).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import shlex
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from shared.errors import InvalidPayload, TargetUnavailable
from shared.scoring.columns import columns_from
from shared.scoring.kinds import ModelKind
from shared.scoring.representation import Representation
from shared.scoring.scorer import Scorer

DEFAULT_JAR = "/opt/mlmanager/mlrunner/mlrunner.jar"
_START_SECONDS = 60.0
_MAGIC = b"MLRB"
_VERSION = 1
_FLOAT64, _TEXT, _INT64 = 1, 2, 3
_NOT_LOADED = "MODEL_NOT_LOADED:"


# -- the packed block ---------------------------------------------------------


def pack(columns: Sequence[tuple[str, bool, Sequence[Any]]]) -> bytes:
    """One block of rows: ``(name, is_text, values)`` per column, values in row order.

    Numbers become float64 (``None`` is NaN, the runner's missing value); text
    is UTF-8 with ``None`` kept as null.
    """
    nrows = len(columns[0][2]) if columns else 0
    parts = [_MAGIC, struct.pack("<Bii", _VERSION, nrows, len(columns))]
    for name, is_text, values in columns:
        if len(values) != nrows:
            raise InvalidPayload("batch columns differ in length")
        encoded_name = name.encode()
        parts.append(struct.pack("<Bi", _TEXT if is_text else _FLOAT64, len(encoded_name)))
        parts.append(encoded_name)
        if is_text:
            texts = [None if v is None else str(v).encode() for v in values]
            lengths = np.array([-1 if t is None else len(t) for t in texts], dtype="<i4")
            parts.append(lengths.tobytes())
            parts.append(b"".join(t for t in texts if t is not None))
        else:
            try:
                parts.append(np.array(values, dtype="<f8").tobytes())
            except (TypeError, ValueError) as exc:
                raise InvalidPayload(f"input {name} is not numeric: {exc}") from exc
    return b"".join(parts)


BlockColumn = tuple[str, np.ndarray | list[str | None]]


def unpack(block: bytes) -> list[BlockColumn]:
    """The columns of a packed block: float64/int64 arrays, text as lists (``None`` = null)."""
    view = memoryview(block)
    if bytes(view[:4]) != _MAGIC or len(view) < 13:
        raise TargetUnavailable("mlrunner answered with a block that is not a packed batch")
    version, nrows, ncols = struct.unpack_from("<Bii", view, 4)
    if version != _VERSION:
        raise TargetUnavailable(f"mlrunner answered with batch version {version}, not {_VERSION}")
    offset, columns = 13, list[BlockColumn]()
    for _ in range(ncols):
        kind, name_length = struct.unpack_from("<Bi", view, offset)
        offset += 5
        name = bytes(view[offset : offset + name_length]).decode()
        offset += name_length
        if kind in (_FLOAT64, _INT64):
            dtype = "<f8" if kind == _FLOAT64 else "<i8"
            columns.append((name, np.frombuffer(view, dtype=dtype, count=nrows, offset=offset)))
            offset += 8 * nrows
            continue
        lengths = np.frombuffer(view, dtype="<i4", count=nrows, offset=offset).tolist()
        offset += 4 * nrows
        texts: list[str | None] = []
        for length in lengths:
            if length < 0:
                texts.append(None)
            else:
                texts.append(bytes(view[offset : offset + length]).decode())
                offset += length
        columns.append((name, texts))
    return columns


# -- the gateway --------------------------------------------------------------


def _setting(name: str, default: str) -> str:
    return os.environ.get(name) or default


def state_dir(uid: int | None = None) -> Path:
    """Where this user's gateway keeps its port, token and log (another user's default
    place with ``uid``, e.g. the database server's)."""
    default = Path(tempfile.gettempdir()) / f"mlmanager-mlrunner-{uid or os.getuid()}"
    if uid is not None:
        return default
    return Path(_setting("MLRUNNER_STATE_DIR", str(default)))


def find_jar() -> Path:
    """The runner's jar: ``MLRUNNER_JAR``, the installed one, or this checkout's build."""
    configured = os.environ.get("MLRUNNER_JAR")
    candidates = [Path(configured)] if configured else [Path(DEFAULT_JAR)]
    if not configured and "__file__" in globals():
        candidates.append(Path(__file__).resolve().parents[2] / "mlrunner/target/mlrunner.jar")
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise TargetUnavailable(
        "scoring an H2O model needs the mlrunner jar, which is not at "
        + " or ".join(str(c) for c in candidates)
        + ": build and install it with `make mlrunner`, or set MLRUNNER_JAR"
        + " (inside PostgreSQL: the setting mlmanager.mlrunner_jar)"
    )


def find_java() -> str:
    java = _setting("MLRUNNER_JAVA", "java")
    found = shutil.which(java)
    if found is None:
        raise TargetUnavailable(
            f"scoring an H2O model needs Java 17 or newer (the mlrunner JVM), and {java!r} "
            "is not found here: install a JRE (e.g. openjdk-17-jre-headless) or set MLRUNNER_JAVA"
        )
    return found


# Gateways this process started: they outlive their Gateway object by design (other
# processes use them too), and stay referenced here so that they are reaped, not warned about.
_STARTED: list[subprocess.Popen[bytes]] = []


class Gateway:
    """This process's connection to the user's mlrunner gateway, started on demand."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._gateway: Any = None
        self.restarts = 0

    def call(self, method: str, *args: Any) -> Any:
        """``entry_point.<method>(*args)``; one retry on a fresh gateway if the JVM is gone."""
        try:
            from py4j.protocol import Py4JError, Py4JJavaError, Py4JNetworkError
        except ImportError as exc:
            raise TargetUnavailable(
                f"scoring an H2O model needs py4j in this Python ({sys.executable}); "
                "inside PostgreSQL install it with `make plpython-deps`"
            ) from exc

        for attempt in (1, 2):
            gateway = self._connected()
            try:
                return getattr(gateway.entry_point, method)(*args)
            except Py4JJavaError as exc:
                raise JvmError(str(exc.java_exception.getMessage())) from None
            except (Py4JNetworkError, Py4JError, OSError) as exc:
                self._forget(gateway)
                if attempt == 2:
                    raise TargetUnavailable(
                        f"the mlrunner JVM did not answer {method}: {exc} "
                        f"(its log: {state_dir() / 'gateway.log'})"
                    ) from None
        raise AssertionError("unreachable")

    def pid(self) -> int:
        return int(self.call("pid"))

    def close(self) -> None:
        """Close this process's connections (the gateway itself keeps running)."""
        with self._lock:
            gateway, self._gateway = self._gateway, None
        if gateway is not None:
            with contextlib.suppress(Exception):
                gateway.close()

    def _connected(self) -> Any:
        with self._lock:
            if self._gateway is None:
                self._gateway = self._attach_or_start()
            return self._gateway

    def _forget(self, gateway: Any) -> None:
        with self._lock:
            if self._gateway is gateway:
                self._gateway = None
        with contextlib.suppress(Exception):
            gateway.close()
        _STARTED[:] = [p for p in _STARTED if p.poll() is None]  # reap, no zombies

    def _attach_or_start(self) -> Any:
        directory = state_dir()
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        with _file_lock(directory / "gateway.lock"):
            state = _read_state(directory / "gateway.json")
            if state is not None:
                gateway = _open(state)
                if gateway is not None:
                    return gateway
                _stop(state)
            state = self._start(directory)
            gateway = _open(state)
            if gateway is None:
                raise TargetUnavailable(
                    f"the mlrunner gateway started (pid {state['pid']}) but does not answer "
                    f"on port {state['port']}; see {directory / 'gateway.log'}"
                )
            self.restarts += 1
            return gateway

    def _start(self, directory: Path) -> dict[str, Any]:
        jar, java = find_jar(), find_java()
        token = secrets.token_urlsafe(32)
        port_file = directory / f"port-{secrets.token_hex(4)}"
        opts = shlex.split(_setting("MLRUNNER_JAVA_OPTS", "-Xmx1g"))
        command = [java, *opts, "-jar", str(jar), "gateway", "--port-file", str(port_file)]
        log_path = directory / "gateway.log"
        with open(log_path, "ab") as log:
            process = subprocess.Popen(
                command,
                env={**os.environ, "MLRUNNER_TOKEN": token},
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=log,
                start_new_session=True,  # outlives this process (a database session)
                close_fds=True,
            )
        _STARTED.append(process)
        deadline = time.monotonic() + _START_SECONDS
        while not port_file.exists():
            if process.poll() is not None:
                raise TargetUnavailable(
                    f"the mlrunner gateway ({java} -jar {jar}) exited with code "
                    f"{process.returncode}: {_tail(log_path)}"
                )
            if time.monotonic() > deadline:
                process.kill()
                raise TargetUnavailable(
                    f"the mlrunner gateway did not start within {_START_SECONDS:.0f} s: "
                    f"{_tail(log_path)}"
                )
            time.sleep(0.02)
        port = int(port_file.read_text().strip())
        port_file.unlink()
        state = {"pid": process.pid, "port": port, "token": token, "jar": str(jar)}
        _write_state(directory / "gateway.json", state)
        return state


class JvmError(InvalidPayload):
    """The runner refused a model or a batch (its message says why)."""


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _read_state(path: Path) -> dict[str, Any] | None:
    try:
        return dict(json.loads(path.read_text()))
    except (OSError, ValueError):
        return None


def _write_state(path: Path, state: dict[str, Any]) -> None:
    staging = path.with_suffix(".tmp")
    descriptor = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        json.dump(state, handle)
    os.replace(staging, path)


def _open(state: dict[str, Any]) -> Any:
    """A py4j gateway on ``state``'s port, or ``None`` when nothing answers there."""
    from py4j.java_gateway import GatewayParameters, JavaGateway

    parameters = GatewayParameters(
        port=int(state["port"]),
        auth_token=state["token"],
        auto_convert=False,
        read_timeout=float(_setting("MLRUNNER_TIMEOUT", "120")),
    )
    gateway = JavaGateway(gateway_parameters=parameters)
    try:
        gateway.entry_point.version()
    except Exception:  # any failure means "not this gateway"
        with contextlib.suppress(Exception):
            gateway.close()
        return None
    return gateway


def _stop(state: dict[str, Any]) -> None:
    """Stop a recorded gateway that no longer answers (it may hang rather than be gone)."""
    with contextlib.suppress(OSError, KeyError, ValueError):
        os.kill(int(state["pid"]), signal.SIGKILL)


def _tail(path: Path, lines: int = 5) -> str:
    try:
        return " | ".join(path.read_text(errors="replace").strip().splitlines()[-lines:])
    except OSError:
        return "(no log)"


def running() -> dict[str, Any] | None:
    """The user's gateway if one answers: its pid, port, jar and cache statistics."""
    state = _read_state(state_dir() / "gateway.json")
    gateway = _open(state) if state is not None else None
    if state is None or gateway is None:
        return None
    try:
        stats = json.loads(gateway.entry_point.stats())
    finally:
        gateway.close()
    return {"pid": state["pid"], "port": state["port"], "jar": state["jar"], "stats": stats}


def stop(directory: Path | None = None) -> int | None:
    """Stop the user's gateway (or the one recorded in ``directory``); its pid, or ``None``
    when none was recorded."""
    directory = directory or state_dir()
    lock = directory / "gateway.lock"  # (not created here: it may be another user's directory)
    with _file_lock(lock) if lock.exists() else contextlib.nullcontext():
        state = _read_state(directory / "gateway.json")
        if state is None:
            return None
        with contextlib.suppress(OSError):
            os.kill(int(state["pid"]), signal.SIGTERM)
        (directory / "gateway.json").unlink(missing_ok=True)
    return int(state["pid"])


_GATEWAY = Gateway()


def gateway() -> Gateway:
    """This process's gateway connection (one per process, shared by its threads)."""
    return _GATEWAY


# -- scoring ------------------------------------------------------------------


class JvmScorer(Scorer):
    """A representation mlrunner scores (format ``mojo``): one gateway call per batch."""

    def __init__(self, representation: Representation) -> None:
        super().__init__(representation)
        self._id = representation.model_uri
        self._load()

    def describe(self) -> dict[str, Any]:
        return dict(json.loads(self._call("describe", self._id, self.representation.checksum)))

    def _load(self) -> None:
        rep = self.representation
        self._call("load", self._id, rep.checksum, rep.format.value, rep.payload, None)

    def _call(self, method: str, *args: Any) -> Any:
        return gateway().call(method, *args)

    def _score(self, columns: list[Sequence[Any]]) -> list[list[Any]]:
        inputs = self.representation.inputs
        block = pack(
            [(c.name, c.sql_type.is_text, v) for c, v in zip(inputs, columns, strict=True)]
        )
        rep = self.representation
        try:
            answer = self._call("score", self._id, rep.checksum, block)
        except JvmError as exc:
            if not str(exc).startswith(_NOT_LOADED):
                raise
            self._load()  # a restarted gateway, or evicted from its cache
            answer = self._call("score", self._id, rep.checksum, block)
        return _prediction_columns(rep.kind, unpack(bytes(answer)))


def _prediction_columns(kind: ModelKind, block: list[BlockColumn]) -> list[list[Any]]:
    values = [column for _, column in block]
    if kind is ModelKind.CLASSIFICATION:
        labels = np.array(values[0], dtype=object)
        numbers = [np.asarray(v, dtype=np.float64) for v in values[1:]]
        probabilities = np.column_stack(numbers) if numbers else None
        return columns_from(kind, labels, probabilities)
    return columns_from(kind, np.asarray(values[0]), None)
