import logging
import random

logger = logging.getLogger(__name__)


def daily_maintenance(message):
    logger.info("daily maintenance for %s", message["message"]["scheduled_for"])


def heartbeat(message):
    """The seconds-schedule task of the demo: fails now and then, to show it."""
    if random.random() < 0.1:
        raise RuntimeError("a simulated failure (one run in ten)")


class Reports:
    @staticmethod
    def digest(message):
        logger.info("digest with %s", message["task"].userdata)
