"""Logging: loguru configured once, human or JSON lines, secrets masked.

Every sink ML Manager adds goes through :class:`SecretMasker`, so a configured
password, key or token never reaches a log, whatever code logged it.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterable
from typing import TextIO

from loguru import logger

from shared.settings import Settings

MASK = "****"
# The password of any URL's user info (``scheme://user:password@host``): a database URL passed
# as a project parameter or a command argument is masked even when it is no configured secret.
_URL_PASSWORD = re.compile(r"(\b[A-Za-z][A-Za-z0-9+.-]*://[^\s:/@'\"]+:)[^\s@/'\"]+@")
_HUMAN_FORMAT = "{time:YYYY-MM-DD HH:mm:ss.SSS} | {level: <7} | {extra[component]} | {message}"


class SecretMasker:
    """Replaces every known secret value (and its JSON-escaped form), and the password of
    every URL with user info, by ``****``."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._secrets: set[str] = set()
        self.add(*secrets)

    def add(self, *secrets: str) -> None:
        for secret in secrets:
            # Very short values would mask ordinary words; they are refused as
            # placeholders outside the embedded mode anyway.
            if secret and len(secret) >= 4:
                self._secrets.add(secret)
                self._secrets.add(json.dumps(secret)[1:-1])

    def __call__(self, text: str) -> str:
        # Longest first, so a secret containing another is masked whole.
        for secret in sorted(self._secrets, key=len, reverse=True):
            if secret in text:
                text = text.replace(secret, MASK)
        if "://" in text:
            text = _URL_PASSWORD.sub(rf"\g<1>{MASK}@", text)
        return text


class MaskedStream:
    """A loguru sink writing masked, already formatted lines to a stream."""

    def __init__(self, stream: TextIO, masker: SecretMasker) -> None:
        self.stream = stream
        self.masker = masker

    def write(self, message: str) -> None:
        self.stream.write(self.masker(message))
        self.stream.flush()


_masker = SecretMasker()


def masker() -> SecretMasker:
    """The process-wide masker (job log sinks share it)."""
    return _masker


def configure_logging(settings: Settings, component: str, stream: TextIO = sys.stderr) -> None:
    """Configure loguru for this process. Call once, at start-up of a command."""
    _masker.add(*settings.secret_values())
    logger.remove()
    logger.configure(extra={"component": component})
    logger.add(
        MaskedStream(stream, _masker),
        level=settings.log_level,
        format=_HUMAN_FORMAT,
        serialize=settings.log_format == "json",
        colorize=False,
        backtrace=False,
        diagnose=False,
    )
