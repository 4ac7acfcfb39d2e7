"""ENABLE_SERVICE and DISABLE_SERVICE: an administrator switches a kind of job on or off."""

from __future__ import annotations

from loguru import logger

from bobby.handlers import register
from bobby.handlers.base import Handler, Step
from shared.errors import InvalidPayload
from shared.handlers import ALWAYS_ENABLED, DISABLE_SERVICE, ENABLE_SERVICE, ServicePayload


class _Switch(Handler):
    enable: bool

    def steps(self) -> list[Step]:
        return [("switching the handler", self.switch)]

    def switch(self) -> None:
        assert isinstance(self.payload, ServicePayload)
        service = self.payload.service
        if not self.enable and service in ALWAYS_ENABLED:
            raise InvalidPayload(f"{service} cannot be disabled", field="service")
        settings = self.ctx.settings
        failed = self.ctx.ledger.set_handler_enabled(
            service,
            self.enable,
            self.ctx.job.user,
            fail_pending=settings.disabled_handler_pending == "fail",
        )
        state = "enabled" if self.enable else "disabled"
        logger.info("{} is now {}", service, state)
        if failed:
            logger.info(
                "{} pending {} job(s) failed (DISABLED_HANDLER_PENDING=fail)", failed, service
            )


@register
class EnableService(_Switch):
    spec = ENABLE_SERVICE
    enable = True


@register
class DisableService(_Switch):
    spec = DISABLE_SERVICE
    enable = False
