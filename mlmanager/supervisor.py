"""`mlmanager up`: migrations, then the server and one worker, supervised together."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from types import FrameType

import requests

from shared.db import at_startup, get_engine
from shared.errors import MLManagerError
from shared.home import admin_password, prepare_home, require_free_port
from shared.migrations import upgrade
from shared.settings import Settings, inherited_environment

STOP_GRACE_SECONDS = 20.0
READY_TIMEOUT_SECONDS = 120.0


class ChildDied(MLManagerError):
    """A supervised process ended on its own."""


class Supervisor:
    """Starts `mlmanager server` and `mlmanager worker`; stops both if either stops."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.children: dict[str, subprocess.Popen[bytes]] = {}
        self._stopping = False

    def _spawn(self, name: str) -> None:
        env = inherited_environment()
        env["MLMANAGER_HOME"] = str(self.settings.home)
        # Own process group: the whole tree (mlflow -> gunicorn -> workers) can be signalled.
        self.children[name] = subprocess.Popen(
            [sys.executable, "-m", "mlmanager", name],
            env=env,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )

    def _signal_all(self, sig: int) -> None:
        for proc in self.children.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)

    def stop(self) -> None:
        """SIGTERM every child group, wait for the grace period, then SIGKILL."""
        self._stopping = True
        self._signal_all(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        for proc in self.children.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        # Also reaps grandchildren (gunicorn workers) left in the groups.
        self._signal_all(signal.SIGKILL)
        for proc in self.children.values():
            proc.wait()

    def _wait_ready(self) -> bool:
        url = f"http://{self.settings.mlmanager_host}:{self.settings.mlmanager_port}/health"
        deadline = time.monotonic() + READY_TIMEOUT_SECONDS
        while time.monotonic() < deadline and not self._stopping:
            if any(p.poll() is not None for p in self.children.values()):
                return False
            try:
                if requests.get(url, timeout=1).status_code == 200:
                    return True
            except requests.RequestException:
                pass
            time.sleep(0.25)
        return False

    def run(self) -> int:
        s = self.settings
        prepare_home(s)
        revision = at_startup(s, "migrating the schema", lambda: upgrade(get_engine(s)))
        get_engine(s).dispose()
        require_free_port(s.mlmanager_host, s.mlmanager_port, "MLMANAGER_PORT")
        require_free_port(s.worker_host, s.worker_port, "WORKER_PORT")
        password_source = admin_password(s)[1]

        def _on_signal(signum: int, _frame: FrameType | None) -> None:
            self._stopping = True

        signal.signal(signal.SIGTERM, _on_signal)
        signal.signal(signal.SIGINT, _on_signal)
        self._spawn("server")
        self._spawn("worker")
        try:
            if self._wait_ready():
                print(
                    f"ML Manager is up at {s.server_url} (schema {revision})\n"
                    f"  login: {s.mlmanager_admin_user}, password from {password_source}\n"
                    f"  data:  {s.home}\n"
                    "  stop:  Ctrl-C",
                    flush=True,
                )
            while not self._stopping:
                for name, proc in self.children.items():
                    code = proc.poll()
                    if code is not None:
                        raise ChildDied(
                            f"the {name} exited with code {code} (its error is above); "
                            "stopping ML Manager"
                        )
                time.sleep(0.2)
        finally:
            self.stop()
        return 0


def run_up(settings: Settings) -> int:
    return Supervisor(settings).run()
