"""`python -m app`: serve the API with uvicorn on HOST:PORT."""

import sys

import uvicorn

from app.core.config import get_settings
from app.core.logging import configure_logging
from app.main import UnsafeConfiguration, create_app


def main() -> None:
    settings = get_settings()
    configure_logging(settings.log_level)
    try:
        app = create_app(settings)
    except UnsafeConfiguration as exc:
        sys.exit(f"error: {exc}")
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
        # Streams in flight get this long to finish and be saved after SIGTERM.
        timeout_graceful_shutdown=int(settings.shutdown_grace_seconds) + 1,
    )


if __name__ == "__main__":
    main()
