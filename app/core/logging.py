"""Process-wide logging set-up."""

import logging

_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure_logging(level: str) -> None:
    logging.basicConfig(level=level, format=_FORMAT)
    logging.getLogger("app").setLevel(level)
