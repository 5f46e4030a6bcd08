"""Describe a task's callable for storage, and turn the description back into a callable.

A description is the JSON dict Sisy stored (``taskinfo_with_label`` returns it):
``func_type`` (function | classmethod | staticmethod | instancemethod),
``module_name``, ``class_name``, ``class_path``, ``func_name``, ``func_path`` and,
for instance methods of Django models, ``model_pk``.

Everything is checked when the task is created, so a typo fails in the
migration or the form, not at 3 a.m. in the worker.

Only callables under a prefix of ``SISY_ALLOWED_CALLABLES`` are described or
resolved, and the prefix is checked before anything is imported: a path typed
in a form, or written into ``sisy_task`` with SQL, cannot make the web process
or the worker import a module outside the allowlist (see docs/security.md).
Descriptions are plain JSON: nothing is pickled or evaluated.
"""

from __future__ import annotations

import importlib
import inspect
import types
import uuid
from collections.abc import Callable
from typing import Any

from . import conf

FUNCTION = "function"
CLASSMETHOD = "classmethod"
STATICMETHOD = "staticmethod"
INSTANCEMETHOD = "instancemethod"
FUNC_TYPES = (FUNCTION, CLASSMETHOD, STATICMETHOD, INSTANCEMETHOD)

PARAMETER_NAME = "message"


class CallableError(ValueError):
    """A callable that cannot be stored, or can no longer be found."""


class CallableRefused(CallableError):
    """A callable outside ``SISY_ALLOWED_CALLABLES``, refused before anything is imported.

    Its message starts with "refused: " and names the setting.
    """


def _check_dotted(path: str) -> list[str]:
    parts = path.split(".")
    if not all(part.isidentifier() for part in parts):
        raise CallableError(f"{path!r} is not a dotted path such as 'myapp.tasks.cleanup'")
    return parts


def check_allowed(path: str) -> None:
    """Refuse ``path`` unless it is under a prefix of SISY_ALLOWED_CALLABLES.

    Reads the path only: nothing is imported. An invalid setting refuses
    everything (and ``manage.py check`` reports it as sisy.E007).
    """
    from django.core.exceptions import ImproperlyConfigured

    try:
        prefixes = conf.allowed_callable_prefixes()
    except ImproperlyConfigured as exc:
        raise CallableRefused(f"refused: {path!r}: {exc}") from None
    if any(conf.is_under(path, prefix) for prefix in prefixes):
        return
    if conf.settings.ALLOWED_CALLABLES is None:
        allowed = "the default: the modules of INSTALLED_APPS but Django, procrastinate and sisy"
    else:
        allowed = "as set in the settings"
    shown = ", ".join(prefixes) or "nothing"
    raise CallableRefused(
        f"refused: {path!r} is not under a module prefix of SISY_ALLOWED_CALLABLES "
        f"({allowed}: {shown})"
    )


def _import_object(path: str) -> tuple[types.ModuleType, list[str], Any]:
    """Import the longest module prefix of ``path``; return (module, attribute names, object)."""
    parts = _check_dotted(path)
    for split in range(len(parts), 0, -1):
        module_name = ".".join(parts[:split])
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            # Only "this prefix is not a module" moves on; a module that fails
            # to import one of its own dependencies is a real error.
            if exc.name and (module_name + ".").startswith(exc.name + "."):
                continue
            raise CallableError(f"importing {module_name!r} failed: {exc}") from exc
        except Exception as exc:
            raise CallableError(f"importing {module_name!r} failed: {exc!r}") from exc
        obj: Any = module
        attrs = parts[split:]
        for index, attr in enumerate(attrs):
            obj = get_member(obj, attr, owner_name=".".join(parts[: split + index]))
        return module, attrs, obj
    raise CallableError(f"unknown module: no prefix of {path!r} can be imported")


def get_member(owner: Any, name: str, owner_name: str | None = None) -> Any:
    """``owner.name``, or a CallableError that names both (``owner_name`` if given)."""
    try:
        return getattr(owner, name)
    except AttributeError:
        shown = owner_name or _dotted_name(owner)
        raise CallableError(f"{shown!r} has no attribute {name!r}") from None


def _dotted_name(obj: Any) -> str:
    if inspect.ismodule(obj):
        return obj.__name__
    qualname = getattr(obj, "__qualname__", None)
    if qualname and getattr(obj, "__module__", None):
        return f"{obj.__module__}.{qualname}"
    return repr(obj)


def import_object(path: str) -> Any:
    """The object at dotted ``path`` (module, class, function, method, constant)."""
    return _import_object(path)[2]


def _check_signature(func: Any, path: str, bound: bool) -> None:
    """Sisy's contract: the callable takes exactly one parameter, ``message``."""
    try:
        params = list(inspect.signature(func).parameters.values())
    except (TypeError, ValueError) as exc:
        raise CallableError(f"cannot read the signature of {path!r}: {exc}") from exc
    if bound:
        params = params[1:]  # self or cls
    names = [p.name for p in params]
    if names != [PARAMETER_NAME] or params[0].kind not in (
        inspect.Parameter.POSITIONAL_OR_KEYWORD,
        inspect.Parameter.POSITIONAL_ONLY,
    ):
        shown = ", ".join(names) or "no parameters"
        raise CallableError(
            f"{path!r} must take exactly one parameter named 'message' (it takes: {shown})"
        )


def _model_pk(cls: type, pk: Any, path: str) -> Any:
    """Check ``pk`` names a row of the Django model ``cls``; return it JSON-ready."""
    from django.core.exceptions import ValidationError
    from django.db import models

    if not (isinstance(cls, type) and issubclass(cls, models.Model)):
        raise CallableError(
            f"{path!r} is an instance method of {cls.__qualname__}, which is not a "
            "Django model: only model instance methods can be bound to a row"
        )
    if pk is None:
        raise CallableError(
            f"{path!r} is an instance method: pass pk_override= with the primary key "
            f"of the {cls.__name__} row it runs on"
        )
    try:
        value = cls._meta.pk.to_python(pk)
    except ValidationError as exc:
        raise CallableError(
            f"pk_override {pk!r} is not a valid primary key for {cls.__name__}: "
            f"{'; '.join(exc.messages)}"
        ) from exc
    if not cls._default_manager.filter(pk=value).exists():
        raise CallableError(f"{cls.__name__} with pk={value!r} does not exist")
    return str(value) if isinstance(value, uuid.UUID) else value


def _describe_attribute(
    module: types.ModuleType, attrs: list[str], pk_override: Any, path: str
) -> dict[str, Any]:
    """Describe ``module.<attrs>`` where attrs is [func] or [Class, func]."""
    if len(attrs) == 1:
        func = getattr(module, attrs[0])
        _check_plain_function(func, path)
        _check_signature(func, path, bound=False)
        if pk_override is not None:
            raise CallableError(
                f"pk_override is only for model instance methods; {path!r} is a function"
            )
        return _info(FUNCTION, module.__name__, None, attrs[0])
    if len(attrs) != 2:
        raise CallableError(
            f"{path!r} is nested too deep: give a module-level function or a method "
            "of a module-level class"
        )
    class_name, func_name = attrs
    cls = getattr(module, class_name)
    if not isinstance(cls, type):
        raise CallableError(f"{module.__name__}.{class_name} is not a class")
    raw = inspect.getattr_static(cls, func_name)
    if isinstance(raw, classmethod):
        _check_signature(raw.__func__, path, bound=True)
        func_type, model_pk = CLASSMETHOD, None
    elif isinstance(raw, staticmethod):
        _check_signature(raw.__func__, path, bound=False)
        func_type, model_pk = STATICMETHOD, None
    elif inspect.isfunction(raw):
        _check_signature(raw, path, bound=True)
        func_type, model_pk = INSTANCEMETHOD, _model_pk(cls, pk_override, path)
    else:
        raise CallableError(f"{path!r} is not a method (it is {type(raw).__name__})")
    if func_type != INSTANCEMETHOD and pk_override is not None:
        raise CallableError(
            f"pk_override is only for model instance methods; {path!r} is a {func_type}"
        )
    return _info(func_type, module.__name__, class_name, func_name, model_pk)


def _check_plain_function(obj: Any, path: str) -> None:
    if inspect.ismodule(obj):
        raise CallableError(f"{path!r} is a module, not a callable")
    if inspect.isclass(obj):
        raise CallableError(f"{path!r} is a class, not a callable: name one of its methods")
    if not callable(obj):
        raise CallableError(f"{path!r} is not callable (it is {type(obj).__name__})")
    if not inspect.isfunction(obj):
        raise CallableError(
            f"{path!r} is a {type(obj).__name__}; give a function, a classmethod, "
            "a staticmethod or a model instance method"
        )


def _info(
    func_type: str,
    module_name: str,
    class_name: str | None,
    func_name: str,
    model_pk: Any = None,
) -> dict[str, Any]:
    class_path = f"{module_name}.{class_name}" if class_name else None
    info = {
        "func_type": func_type,
        "module_name": module_name,
        "class_name": class_name,
        "class_path": class_path,
        "func_name": func_name,
        "func_path": f"{class_path or module_name}.{func_name}",
    }
    if func_type == INSTANCEMETHOD:
        info["model_pk"] = model_pk
    return info


def _path_of(obj: Any) -> tuple[str, Any]:
    """Dotted path of a callable object, plus the instance it is bound to (if any)."""
    if isinstance(obj, str):
        return obj, None
    target, instance = obj, None
    if inspect.ismethod(obj):
        target = obj.__func__
        if not isinstance(obj.__self__, type):
            instance = obj.__self__
    if inspect.ismodule(obj) or inspect.isclass(obj):
        name = getattr(obj, "__qualname__", getattr(obj, "__name__", repr(obj)))
        kind = "module" if inspect.ismodule(obj) else "class"
        raise CallableError(f"{name!r} is a {kind}, not a callable")
    module_name = getattr(target, "__module__", None)
    qualname = getattr(target, "__qualname__", None)
    if not (module_name and qualname):
        raise CallableError(f"{obj!r} has no importable dotted path; give a function or method")
    if "<" in qualname:  # <lambda>, <locals>
        raise CallableError(
            f"{module_name}.{qualname} cannot be imported by a worker: "
            "give a module-level function or a method of a module-level class"
        )
    return f"{module_name}.{qualname}", instance


def describe(the_callable: Any, pk_override: Any = None) -> dict[str, Any]:
    """Describe ``the_callable`` (an object or a dotted path) for storage.

    Raises CallableError (a ValueError) naming the problem: a path outside
    SISY_ALLOWED_CALLABLES (CallableRefused, checked before any import),
    unknown module, missing attribute, wrong signature, a class or module
    instead of a callable, an instance method without a row to run on.
    """
    path, instance = _path_of(the_callable)
    _check_dotted(path)
    check_allowed(path)  # before importing anything
    if instance is not None and pk_override is None:
        pk_override = getattr(instance, "pk", None)
        if pk_override is None:
            raise CallableError(
                f"{path!r} is bound to an unsaved {type(instance).__name__}: save it first"
            )
    module, attrs, obj = _import_object(path)
    if not attrs:
        raise CallableError(f"{path!r} is a module, not a callable")
    if len(attrs) == 1:
        _check_plain_function(obj, path)
    return _describe_attribute(module, attrs, pk_override, path)


def validate_info(info: Any) -> dict[str, Any]:
    """Check a stored description (from a form, fixture or raw SQL) still resolves."""
    if not isinstance(info, dict) or not info.get("func_path"):
        raise CallableError("the callable description must be a dict with a 'func_path'")
    if info.get("func_type") not in FUNC_TYPES:
        raise CallableError(f"unknown func_type {info.get('func_type')!r}")
    return describe(info["func_path"], pk_override=info.get("model_pk"))


def resolve(info: dict[str, Any], using: str | None = None) -> Callable[[Any], Any]:
    """Return the callable a description names, bound to its model row if any.

    The row of an instance method is fetched now, from database ``using``, so
    the method sees the row as it is when the run starts.

    The description may come from raw SQL, so it is not trusted: a path
    outside SISY_ALLOWED_CALLABLES is refused (CallableRefused) before
    anything is imported, and an instance method must belong to a Django model.
    """
    from django.core.exceptions import ObjectDoesNotExist
    from django.db import models

    path = info.get("func_path")
    if not isinstance(path, str) or not path:
        raise CallableError("the callable description has no 'func_path'")
    _check_dotted(path)
    check_allowed(path)  # before importing anything
    if info.get("func_type") not in FUNC_TYPES:
        raise CallableError(f"unknown func_type {info.get('func_type')!r}")
    module, attrs, obj = _import_object(path)
    if info["func_type"] != INSTANCEMETHOD:
        if not callable(obj):
            raise CallableError(f"{path!r} is no longer callable")
        func: Callable[[Any], Any] = obj
        return func
    cls = getattr(module, attrs[0]) if len(attrs) == 2 else None
    if not (isinstance(cls, type) and issubclass(cls, models.Model)):
        raise CallableError(
            f"{path!r} is not an instance method of a Django model: only model "
            "instance methods can be bound to a row"
        )
    manager = cls._default_manager.db_manager(using)
    try:
        instance = manager.get(pk=info.get("model_pk"))
    except ObjectDoesNotExist:
        raise CallableError(
            f"{cls.__name__} with pk={info.get('model_pk')!r} does not exist (any more)"
        ) from None
    method: Callable[[Any], Any] = getattr(instance, attrs[1])
    return method
