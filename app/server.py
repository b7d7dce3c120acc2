"""Serving the app with uvicorn: in this process, or in WORKERS processes that share one
listening socket, started and kept running by this one."""

import functools
import gc
import logging
import math
import os
import shutil
import signal
import socket
import tempfile
import threading
import time
from multiprocessing.context import SpawnProcess
from types import FrameType

import uvicorn
from fastapi import FastAPI
from prometheus_client import multiprocess
from uvicorn._subprocess import get_subprocess
from uvicorn.config import STARTUP_FAILURE

from app.config import Settings, get_settings
from app.kit.http.header_limit import http_protocol
from app.kit.logging import configure_logging
from app.main import create_app
from app.replies.generation import ReplyTasks

logger = logging.getLogger(__name__)

# How much longer than the grace period uvicorn waits for requests: time for the replies
# stopped at the deadline to be saved and their requests to answer.
_UVICORN_MARGIN_SECONDS = 2
# How often the supervisor looks at its workers, and how long after the grace period (and
# uvicorn's margin) it waits for one to exit before killing it.
_SUPERVISE_INTERVAL_SECONDS = 0.5
_EXIT_MARGIN_SECONDS = 5.0
# How often a worker checks that its supervisor is still its parent: a worker outlives a
# supervisor killed without its `finally` (SIGKILL, the OOM killer) by at most this plus its
# shutdown (the grace period and _UVICORN_MARGIN_SECONDS).
_SUPERVISOR_CHECK_SECONDS = 1.0


class AppServer(uvicorn.Server):
    """uvicorn, telling the app when shutdown began, so that waiting for open streams
    (uvicorn's part) and for replies still being generated (the app's) share one grace
    period instead of spending it twice; and freezing the start-up heap once it is up."""

    def __init__(self, config: uvicorn.Config, app: FastAPI, grace_seconds: float) -> None:
        super().__init__(config)
        self._app = app
        self._grace_seconds = grace_seconds

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        # What is alive once the app is up (modules, the app, its start-up state: some 170,000
        # objects) lives as long as the process. Freezing it keeps the collector's full passes,
        # which stall every request in flight, from walking all of it each time
        # (docs/performance.md). The collection first frees start-up garbage rather than
        # freezing it.
        gc.collect()
        gc.freeze()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        deadline = time.monotonic() + self._grace_seconds
        self._app.state.shutdown_deadline = deadline
        # uvicorn cancels the requests still open when its own timeout ends (a plain request
        # then answered a bare 500, a stream was cut without its end). So the app stops the
        # replies at the deadline, which saves each and lets its request answer, and uvicorn
        # waits _UVICORN_MARGIN_SECONDS longer (server_config) before it cancels anything.
        reply_tasks: ReplyTasks | None = getattr(self._app.state, "reply_tasks", None)
        if reply_tasks is not None:
            reply_tasks.stop_all_at(deadline)
        await super().shutdown(sockets)


def server_config(app: FastAPI | str, settings: Settings) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
        # Logging is configured by configure_logging; uvicorn's loggers go through it.
        log_config=None,
        # JSON logs have the app's own access lines, which name the route and the duration.
        access_log=settings.log_format == "text",
        http=http_protocol(settings.max_request_header_bytes),
        timeout_graceful_shutdown=math.ceil(settings.shutdown_grace_seconds)
        + _UVICORN_MARGIN_SECONDS,
    )


def serve(app: FastAPI, settings: Settings) -> None:
    """Serve `app` in this process until SIGTERM or SIGINT."""
    AppServer(server_config(app, settings), app, settings.shutdown_grace_seconds).run()


def _run_worker(sockets: list[socket.socket], supervisor_pid: int) -> None:
    """A worker process: the app, from the same settings as its parent, on the shared socket,
    until SIGTERM or until its supervisor is gone. Module-level, so that the spawned process
    finds it by name."""
    settings = get_settings()
    configure_logging(settings.log_level, settings.log_format)
    app = create_app(settings)
    # Before uvicorn's signal handlers are in place, SIGTERM ends the worker at once: it
    # serves nothing yet.
    _stop_when_orphaned(supervisor_pid)
    AppServer(server_config(app, settings), app, settings.shutdown_grace_seconds).run(sockets)


def _stop_when_orphaned(supervisor_pid: int) -> None:
    """SIGTERM to this worker, so that it shuts down as it would when told to, once its parent
    is no longer `supervisor_pid` (the supervisor died without stopping it): checked every
    _SUPERVISOR_CHECK_SECONDS, as gunicorn's workers do.

    Not prctl(PR_SET_PDEATHSIG): Linux only, and it fires when the thread that started the
    worker exits, not the supervisor process."""

    def watch() -> None:
        while os.getppid() == supervisor_pid:
            time.sleep(_SUPERVISOR_CHECK_SECONDS)
        logger.warning("supervisor [%s] is gone; worker [%s] stopping", supervisor_pid, os.getpid())
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="supervisor-watch", daemon=True).start()


class WorkerSupervisor:
    """`workers` processes serving one socket that this process binds: a worker that dies is
    replaced; SIGTERM or SIGINT stops them all, each with its grace period. If this process is
    killed outright, each worker begins the same shutdown by itself within a second (so it
    exits within about SHUTDOWN_GRACE_SECONDS + 3 s: _stop_when_orphaned).

    Metrics: each worker writes its values under PROMETHEUS_MULTIPROC_DIR (a fresh directory
    unless the operator named one), and a scrape of any worker adds up all of them.
    """

    def __init__(self, settings: Settings, workers: int) -> None:
        self._settings = settings
        self._workers = workers
        self._stop = threading.Event()
        self._signal: int | None = None
        self._metrics_dir: str | None = None

    def run(self) -> int | None:
        """Serve until told to stop; the signal that stopped it (None: the workers could not
        start)."""
        if "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
            self._metrics_dir = tempfile.mkdtemp(prefix="chat-metrics-")
            os.environ["PROMETHEUS_MULTIPROC_DIR"] = self._metrics_dir
        # Only the socket and uvicorn's logging levels come from this config (it is pickled
        # for each worker, which builds its own app and full config: _run_worker).
        config = uvicorn.Config(
            "app.main:create_app",
            host=self._settings.host,
            port=self._settings.port,
            log_level=self._settings.log_level.lower(),
            log_config=None,
        )
        sock = config.bind_socket()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)
        processes = [self._start(config, sock) for _ in range(self._workers)]
        logger.info("serving with %d workers on %s:%d", self._workers, config.host, config.port)
        try:
            while not self._stop.wait(_SUPERVISE_INTERVAL_SECONDS):
                for index, process in enumerate(processes):
                    if process.is_alive():
                        continue
                    process.join()
                    _forget_metrics_of(process)
                    if process.exitcode == STARTUP_FAILURE:
                        # It would fail the same way every time: stop rather than loop.
                        logger.error("worker [%s] could not start; stopping", process.pid)
                        self._stop.set()
                        break
                    logger.warning(
                        "worker [%s] exited (status %s); starting another",
                        process.pid,
                        process.exitcode,
                    )
                    processes[index] = self._start(config, sock)
        finally:
            self._stop_all(processes)
            sock.close()
            if self._metrics_dir is not None:
                shutil.rmtree(self._metrics_dir, ignore_errors=True)
        return self._signal

    def _on_signal(self, sig: int, _frame: FrameType | None) -> None:
        self._signal = sig
        self._stop.set()

    @staticmethod
    def _start(config: uvicorn.Config, sock: socket.socket) -> SpawnProcess:
        # The supervisor's pid from here, not the worker's first getppid(): a supervisor killed
        # while the worker starts would otherwise go unnoticed.
        worker = functools.partial(_run_worker, supervisor_pid=os.getpid())
        process = get_subprocess(config, target=worker, sockets=[sock])
        process.start()
        return process

    def _stop_all(self, processes: list[SpawnProcess]) -> None:
        """SIGTERM to every worker (on Ctrl-C the terminal has sent them SIGINT already),
        then wait for each through its grace period."""
        for process in processes:
            if process.is_alive() and process.pid is not None:
                os.kill(process.pid, signal.SIGTERM)
        deadline = (
            time.monotonic()
            + self._settings.shutdown_grace_seconds
            + _UVICORN_MARGIN_SECONDS
            + _EXIT_MARGIN_SECONDS
        )
        for process in processes:
            process.join(max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                logger.error("worker [%s] did not stop in time; killing it", process.pid)
                process.kill()
                process.join()


def _forget_metrics_of(process: SpawnProcess) -> None:
    """A dead worker's live gauges (streams in progress, say) stop counting."""
    if process.pid is not None and "PROMETHEUS_MULTIPROC_DIR" in os.environ:
        multiprocess.mark_process_dead(process.pid)  # type: ignore[no-untyped-call]
