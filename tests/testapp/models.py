import uuid

from django.db import models
from django.db.models import F


class Hit(models.Model):
    """One call of a test callable, written by the callable itself."""

    name = models.CharField(max_length=100)
    task_id = models.BigIntegerField()
    run_id = models.BigIntegerField()
    scheduled_for = models.DateTimeField()
    row_pk = models.CharField(max_length=100, blank=True, default="")


class Touchable(models.Model):
    """An abstract model: it has no rows, so its methods cannot be bound to one."""

    class Meta:
        abstract = True

    def ping(self, message):
        pass


class Widget(models.Model):
    name = models.CharField(max_length=50, default="widget")
    touched = models.IntegerField(default=0)

    def touch(self, message):
        _record_touch(self, message)

    def two_params(self, message, other):  # wrong signature
        pass


class UUIDWidget(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4)
    touched = models.IntegerField(default=0)

    def touch(self, message):
        _record_touch(self, message)


class SlugWidget(models.Model):
    slug = models.SlugField(primary_key=True)
    touched = models.IntegerField(default=0)

    def touch(self, message):
        _record_touch(self, message)


def _record_touch(row, message):
    type(row).objects.filter(pk=row.pk).update(touched=F("touched") + 1)
    Hit.objects.create(
        name=f"{type(row).__name__}.touch",
        task_id=message["task"].pk,
        run_id=message["message"]["run_id"],
        scheduled_for=message["message"]["scheduled_for"],
        row_pk=str(row.pk),
    )


class AsyncWidget(Widget):
    """A Widget row whose ``touch`` is a coroutine, using Django's async ORM."""

    class Meta:
        proxy = True

    async def touch(self, message):
        await type(self).objects.filter(pk=self.pk).aupdate(touched=F("touched") + 1)
        await Hit.objects.acreate(
            name="AsyncWidget.touch",
            task_id=message["task"].pk,
            run_id=message["message"]["run_id"],
            scheduled_for=message["message"]["scheduled_for"],
            row_pk=str(self.pk),
        )
