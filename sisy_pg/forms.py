"""The admin's task form: the callable typed as a dotted path and checked at once,
the time zone picked from the IANA names, userdata and options shown indented."""

from __future__ import annotations

import json
import zoneinfo
from functools import lru_cache
from typing import TYPE_CHECKING, Any, cast

from django import forms
from django.core.exceptions import ValidationError
from django.db import connections
from django.forms.fields import InvalidJSONInput

from . import callables, limits, procrastinate_seam
from .models import Task

if TYPE_CHECKING:
    # ModelForm is generic only in the stubs: it cannot be subscripted at run time.
    _TaskFormBase = forms.ModelForm[Task]
else:
    _TaskFormBase = forms.ModelForm


@lru_cache(maxsize=1)
def timezone_names() -> tuple[str, ...]:
    """The IANA zones that both this machine's tz database and PostgreSQL's know (read once).

    The database's trigger refuses a zone PostgreSQL does not know (an older
    tz database, or names such as ``localtime``): the form offers none of those.
    """
    with connections[procrastinate_seam.database_alias()].cursor() as cursor:
        cursor.execute("SELECT name FROM pg_timezone_names")
        known = {name for (name,) in cursor.fetchall()}
    return tuple(sorted(zoneinfo.available_timezones() & known))


class JSONTextarea(forms.Textarea):
    """A textarea whose ``maxlength`` stops a browser sending more than SISY_JSON_MAX_BYTES."""

    def get_context(self, name: str, value: Any, attrs: dict[str, Any] | None) -> dict[str, Any]:
        return super().get_context(name, value, {**(attrs or {}), "maxlength": limits.max_bytes()})


class IndentedJSONField(forms.JSONField):
    """JSON shown indented, keys sorted: people read userdata and options here.

    A document too deep or too big (see sisy_pg/limits.py) is an error on the
    field, never a ``RecursionError``; one stored too deep to be read is
    shown as its text, to be replaced.
    """

    def prepare_value(self, value: Any) -> Any:
        if isinstance(value, InvalidJSONInput):
            return value
        if isinstance(value, limits.UnreadableJSON):
            return value.text
        # Beyond the limits (a row written before them): on one line, since
        # the indenting encoder recurses.
        indent = None if limits.json_error("value", value) else 2
        return json.dumps(
            value, ensure_ascii=False, indent=indent, sort_keys=True, cls=self.encoder
        )

    def bound_data(self, data: Any, initial: Any) -> Any:
        value = super().bound_data(data, initial)
        if not isinstance(value, InvalidJSONInput) and limits.json_error("value", value):
            return InvalidJSONInput(data)  # shown again as typed
        return value

    def to_python(self, value: Any) -> Any:
        try:
            converted = super().to_python(value)
        except ValidationError:
            if isinstance(value, str) and len(value) >= limits.max_bytes():
                # A browser cut a longer text at the textarea's maxlength: the
                # cause is its size, not a typo.
                raise ValidationError(
                    f"This JSON is too big: at most {limits.max_bytes():,} bytes "
                    "(SISY_JSON_MAX_BYTES); the browser cut it there, so it no longer parses."
                ) from None
            raise
        error = limits.json_error("this JSON", converted)
        if error:
            raise ValidationError(error[0].upper() + error[1:] + ".")
        return converted


class TaskForm(_TaskFormBase):
    callable_path = forms.CharField(
        label="Callable",
        max_length=500,
        help_text="Dotted path: myapp.tasks.cleanup, myapp.models.Report.build, ...",
        widget=forms.TextInput(attrs={"class": "vTextField", "spellcheck": "false"}),
    )
    pk_override = forms.CharField(
        label="Row primary key",
        required=False,
        max_length=100,
        help_text="For an instance method of a model: the primary key of its row.",
    )
    task_using = IndentedJSONField(
        label="Django task options",
        required=False,
        widget=forms.Textarea(attrs={"rows": 2, "class": "sisy-json"}),
        help_text=(
            "For a Django task (@task): what this schedule changes of it, among backend, "
            'queue_name and priority, e.g. {"queue_name": "mail"}. Its userdata are its '
            "keyword arguments."
        ),
    )
    timezone = forms.ChoiceField(
        label="Time zone",
        help_text="The IANA time zone the schedule is read in.",
        error_messages={
            "invalid_choice": "unknown time zone %(value)s: pick an IANA name such as Europe/Paris"
        },
    )

    class Meta:
        model = Task
        fields = [
            "label",
            "schedule",
            "timezone",
            "enabled",
            "start_running",
            "end_running",
            "iterations",
            "wait_for_schedule",
            "allow_overlap",
            "options",
            "userdata",
        ]
        field_classes = {"userdata": IndentedJSONField, "options": IndentedJSONField}
        widgets = {
            "schedule": forms.TextInput(
                attrs={"class": "vTextField", "spellcheck": "false", "autocomplete": "off"}
            ),
            "userdata": JSONTextarea(attrs={"rows": 5, "class": "sisy-json"}),
            "options": JSONTextarea(attrs={"rows": 5, "class": "sisy-json"}),
        }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        info = self.instance.callable_info or {}
        self.fields["callable_path"].initial = info.get("func_path", "")
        pk = info.get("model_pk")
        self.fields["pk_override"].initial = "" if pk is None else pk
        self.fields["task_using"].initial = info.get("using") or None
        names = timezone_names()
        # The task's own zone; a new task's is the model's default
        # (SISY_DEFAULT_TIMEZONE, else TIME_ZONE), the zone the preview shows.
        # Selected, or a browser would submit the list's first name.
        current = self.instance.timezone
        # A zone written by other means and unknown here stays selected, not
        # silently replaced by the first name of the list.
        extra = (current,) if current and current not in names else ()
        zone = cast(forms.ChoiceField, self.fields["timezone"])
        zone.choices = [(name, name) for name in (*extra, *names)]
        zone.initial = current

    def clean(self) -> dict[str, Any]:
        # ModelForm.clean() returns self.cleaned_data (the stubs say it may be None).
        super().clean()
        cleaned = self.cleaned_data
        path = cleaned.get("callable_path")
        if path:
            # describe() checks SISY_ALLOWED_CALLABLES on the typed path before
            # importing anything: a form cannot make the web process import
            # a module outside the allowlist.
            try:
                info = callables.describe(
                    path.strip(), pk_override=cleaned.get("pk_override") or None
                )
            except callables.CallableError as exc:
                self.add_error("callable_path", str(exc))
                return cleaned
            using = cleaned.get("task_using")
            if using and info["func_type"] != callables.DJANGO_TASK:
                self.add_error("task_using", "Only a Django task (@task) has these options.")
            elif using:
                try:
                    info = callables.validate_info({**info, "using": using})
                except callables.CallableError as exc:
                    self.add_error("task_using", str(exc))
            self.instance.callable_info = info
        return cleaned
