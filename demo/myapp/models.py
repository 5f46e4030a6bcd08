import logging

from django.db import models
from django.db.models import F

logger = logging.getLogger(__name__)


class ModelFoo(models.Model):
    name = models.CharField(max_length=50, default="foo")
    calls = models.IntegerField(default=0)

    def InstanceMethod(self, message):
        """Runs on the row whose pk the task stores (pk_override)."""
        ModelFoo.objects.filter(pk=self.pk).update(calls=F("calls") + 1)
        logger.info("ModelFoo %s called for %s", self.pk, message["message"]["scheduled_for"])
