"""The admin's task form: the callable is typed as a dotted path, checked at once."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django import forms

from . import callables
from .models import Task

if TYPE_CHECKING:
    # ModelForm is generic only in the stubs: it cannot be subscripted at run time.
    _TaskFormBase = forms.ModelForm[Task]
else:
    _TaskFormBase = forms.ModelForm


class TaskForm(_TaskFormBase):
    callable_path = forms.CharField(
        label="Callable",
        max_length=500,
        help_text="Dotted path: myapp.tasks.cleanup, myapp.models.Report.build, ...",
    )
    pk_override = forms.CharField(
        label="Row primary key",
        required=False,
        max_length=100,
        help_text="For an instance method of a model: the primary key of its row.",
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

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        info = self.instance.callable_info or {}
        self.fields["callable_path"].initial = info.get("func_path", "")
        pk = info.get("model_pk")
        self.fields["pk_override"].initial = "" if pk is None else pk

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
                self.instance.callable_info = callables.describe(
                    path.strip(), pk_override=cleaned.get("pk_override") or None
                )
            except callables.CallableError as exc:
                self.add_error("callable_path", str(exc))
        return cleaned
