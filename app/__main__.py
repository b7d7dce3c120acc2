"""`python -m app`: serve the API with uvicorn on HOST:PORT, in WORKERS processes."""

import asyncio
import os
import signal
import sys

from fastapi import FastAPI
from pydantic import ValidationError

from app.config import Settings, describe_invalid_settings, get_settings
from app.kit.db import migrate
from app.kit.db.preflight import DatabaseUnavailable, check_database
from app.kit.logging import configure_logging
from app.main import UnsafeConfiguration, create_app
from app.server import WorkerSupervisor, serve


def main() -> None:
    try:
        settings = get_settings()
    except ValidationError as exc:
        sys.exit(f"error: {describe_invalid_settings(exc)}")
    configure_logging(settings.log_level, settings.log_format)
    try:
        app = create_app(settings)
        # Before the server starts: a database that cannot be used is then one line that says
        # why, not a traceback from the start-up migration.
        asyncio.run(check_database(settings))
    except (UnsafeConfiguration, DatabaseUnavailable) as exc:
        sys.exit(f"error: {exc}")
    if settings.workers == 1:
        _serve_here(app, settings)
        return
    if settings.migrate_on_startup:
        # Once, here, before the workers start: they would race each other to migrate.
        asyncio.run(migrate.upgrade_async(settings.database_url))
        os.environ["MIGRATE_ON_STARTUP"] = "false"
    stopped_by = WorkerSupervisor(settings, settings.workers).run()
    if stopped_by is None:
        sys.exit("error: the workers could not start (see the log above)")
    if stopped_by == signal.SIGTERM:
        _end_by_sigterm()


def _serve_here(app: FastAPI, settings: Settings) -> None:
    # Like uvicorn itself, the process ends by re-raising SIGTERM after a clean shutdown
    # (exit status 143), so supervisors see that it stopped because it was told to.
    try:
        serve(app, settings)
    except KeyboardInterrupt:
        # Ctrl-C: uvicorn shut down cleanly, then re-raised SIGINT, which asyncio turns into a
        # KeyboardInterrupt. Stopping a server from its terminal is a normal end: status 0,
        # no traceback, and no error line from `make run`.
        return


def _end_by_sigterm() -> None:
    """Exit as a process killed by SIGTERM (status 143), as one uvicorn process does after a
    clean shutdown, so that supervisors see it stopped because it was told to."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGTERM)


if __name__ == "__main__":
    main()
