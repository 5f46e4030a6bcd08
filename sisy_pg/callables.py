"""Describe a task's callable for storage, and turn the description back into a callable.

A description is the JSON dict Sisy stored (``taskinfo_with_label`` returns it):
``func_type`` (function | classmethod | staticmethod | instancemethod),
``module_name``, ``class_name``, ``class_path``, ``func_name``, ``func_path`` and,
for instance methods of Django models, ``model_pk``. sisy-pg adds the func_type
``django_task``: a Django task (``django.tasks``' ``@task``), which the worker
enqueues rather than calls, with ``using``, what the schedule changes of it
(its backend, queue, priority; see :mod:`sisy_pg.task_targets`).

One rule, :func:`locate`, says what a dotted path may name. ``describe()``
(``task_with_callable``, ``save()``, the admin form, ``bulk_create``) and
``resolve()`` (the worker, before each run) both apply it, so what the worker
calls is exactly what could have been saved, whoever wrote the row (raw SQL
and ``queryset.update()`` skip ``save()``). Everything is checked when the
task is created, so a typo fails in the migration or the form, not at 3 a.m.
in the worker.

Only callables under a prefix of ``SISY_ALLOWED_CALLABLES``, and defined
there, are described or resolved, and the prefix is checked before anything
is imported: a path typed in a form, or written into ``sisy_task`` with SQL,
cannot make the web process or the worker import a module outside the
allowlist, nor reach an object outside it through an allowed module's
attributes (see docs/security.md). Descriptions are plain JSON: nothing is
pickled or evaluated.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import inspect
import types
import uuid
from collections.abc import Callable, Iterator
from typing import Any

from . import conf, task_targets, tasks_framework

FUNCTION = "function"
CLASSMETHOD = "classmethod"
STATICMETHOD = "staticmethod"
INSTANCEMETHOD = "instancemethod"
DJANGO_TASK = "django_task"
FUNC_TYPES = (FUNCTION, CLASSMETHOD, STATICMETHOD, INSTANCEMETHOD, DJANGO_TASK)

PARAMETER_NAME = "message"


class CallableError(ValueError):
    """A callable that cannot be stored, or can no longer be found.

    ``sisy_message`` is the text Sisy 1.0b3's ``func_from_string`` gave for
    the same refusal, if it refused it: Sisy's helpers (sisy_pg.models) raise
    that text, sisy-pg's own API the message, which says more.
    """

    def __init__(self, message: str, sisy_message: str | None = None) -> None:
        super().__init__(message)
        self.sisy_message = sisy_message


class CallableRefused(CallableError):
    """A callable outside ``SISY_ALLOWED_CALLABLES``, refused before anything is imported.

    Its message starts with "refused: " and names the setting.
    """


def _check_dotted(path: str) -> list[str]:
    parts = path.split(".")
    if not all(part.isidentifier() for part in parts):
        raise CallableError(f"{path!r} is not a dotted path such as 'myapp.tasks.cleanup'")
    return parts


def _allowed_prefixes(path: str) -> tuple[str, ...]:
    """SISY_ALLOWED_CALLABLES resolved; an invalid setting refuses ``path`` (fails closed)."""
    from django.core.exceptions import ImproperlyConfigured

    try:
        return conf.allowed_callable_prefixes()
    except ImproperlyConfigured as exc:
        raise CallableRefused(f"refused: {path!r}: {exc}") from None


def _allowlist_text(prefixes: tuple[str, ...]) -> str:
    if conf.settings.ALLOWED_CALLABLES is None:
        allowed = "the default: the modules of INSTALLED_APPS but Django's, procrastinate's, sisy's and the task framework's"
    else:
        allowed = "as set in the settings"
    return f"SISY_ALLOWED_CALLABLES ({allowed}: {', '.join(prefixes) or 'nothing'})"


def check_allowed(path: str) -> tuple[str, ...]:
    """Refuse ``path`` unless it is under a prefix of SISY_ALLOWED_CALLABLES; the prefixes.

    Reads the path only: nothing is imported. An invalid setting refuses
    everything (and ``manage.py check`` reports it as sisy.E007).
    """
    prefixes = _allowed_prefixes(path)
    if not any(conf.is_under(path, prefix) for prefix in prefixes):
        raise CallableRefused(
            f"refused: {path!r} is not under a module prefix of {_allowlist_text(prefixes)}"
        )
    return prefixes


def _import_object(path: str) -> tuple[types.ModuleType, list[str], Any]:
    """Import the longest module prefix of ``path``; return (module, attribute names, object)."""
    module, attrs = _import_module(_check_dotted(path), path)
    obj: Any = module
    for index, attr in enumerate(attrs):
        owner_name = ".".join([module.__name__, *attrs[:index]])
        obj = get_member(obj, attr, owner_name=owner_name)
    return module, attrs, obj


def _import_module(parts: list[str], path: str) -> tuple[types.ModuleType, list[str]]:
    """The longest prefix of ``parts`` that is a module, imported, and the names after it."""
    missing = parts[0]
    for split in range(len(parts), 0, -1):
        module_name = ".".join(parts[:split])
        try:
            return importlib.import_module(module_name), parts[split:]
        except ModuleNotFoundError as exc:
            # Only "this prefix is not a module" moves on; a module that fails
            # to import one of its own dependencies is a real error.
            if exc.name and (module_name + ".").startswith(exc.name + "."):
                missing = exc.name
                continue
            raise CallableError(f"importing {module_name!r} failed: {exc}") from exc
        except Exception as exc:
            raise CallableError(f"importing {module_name!r} failed: {exc!r}") from exc
    raise CallableError(
        f"Module {missing!r} not found: no prefix of {path!r} can be imported",
        sisy_message=f"Module {missing} not found",
    )


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
    """The object at dotted ``path`` (module, class, function, method, constant).

    Follows any chain of attributes and consults no allowlist: for Sisy's
    ``get_module_member_by_dottedpath``, never for a callable to store or call
    (:func:`locate` is the rule for those).
    """
    return _import_object(path)[2]


@dataclasses.dataclass(frozen=True)
class Target:
    """What a dotted path names, found by :func:`locate`."""

    path: str
    func_type: str
    module: types.ModuleType
    cls: type | None
    func: types.FunctionType  # the function itself (a method's, unbound)
    task: Any = None  # a Django task: the module-level Task object

    def info(self, model_pk: Any = None) -> dict[str, Any]:
        """The description to store (Sisy's format)."""
        module_name = self.module.__name__
        class_name = self.path.split(".")[-2] if self.cls is not None else None
        class_path = f"{module_name}.{class_name}" if class_name else None
        func_name = self.path.split(".")[-1]
        info = {
            "func_type": self.func_type,
            "module_name": module_name,
            "class_name": class_name,
            "class_path": class_path,
            "func_name": func_name,
            "func_path": f"{class_path or module_name}.{func_name}",
        }
        if self.func_type == INSTANCEMETHOD:
            info["model_pk"] = model_pk
        return info

    def bind(self, instance: Any = None) -> Callable[[Any], Any]:
        """The callable to call: a method bound to its class or to the model row ``instance``."""
        if self.func_type == CLASSMETHOD:
            return types.MethodType(self.func, self.cls)
        if self.func_type == INSTANCEMETHOD:
            return types.MethodType(self.func, instance)
        return self.func


def locate(path: str, *, allowlist: bool = True) -> Target:
    """What dotted ``path`` names, if a task may call it: the one rule, checked in this order.

    1. With ``allowlist`` (always, but for Sisy's ``func_from_string``, which
       returns an object to its caller and neither stores nor calls it): the
       path is under a prefix of SISY_ALLOWED_CALLABLES, before any import.
    2. A module, then a function, or a class then one of its members. Nothing
       else of a module is followed (a module it imported, its
       ``__builtins__``): ``allowed.uuid.os.system`` is refused unimported.
    3. The function, class and method are what the path names (their
       ``__qualname__``, a method's ``__name__``: an alias is refused) and,
       with ``allowlist``, defined under an allowed prefix:
       ``from os.path import join`` in an allowed module does not allow
       ``allowed.join``, nor does a model class imported from Django.
    4. A Python function (``def`` or ``async def``, not a generator), a
       classmethod, a staticmethod, or an instance method of a Django model,
       taking exactly one parameter, ``message``.

    The row an instance method runs on is not checked here (see
    :func:`describe` and :func:`resolve`).
    """
    parts = _check_dotted(path)
    prefixes = check_allowed(path) if allowlist else None  # before importing anything
    if len(parts) < 2:
        raise CallableError(
            f"{path!r} is not a full dotted path: give a module and a callable in it, "
            "such as 'myapp.tasks.cleanup'",
            sisy_message="Need full dotted path to task function",
        )
    module, attrs = _import_module(parts, path)
    if not attrs:
        raise CallableError(
            f"{path!r} is a module, not a callable", sisy_message="Cannot call module directly"
        )
    if len(attrs) > 2:
        raise CallableError(
            f"{path!r} is nested too deep: a task's callable is a function of a module or a "
            "method of a class defined in it (a module's other attributes are not followed)"
        )
    if len(attrs) == 1:
        # Sisy named a missing function so, but for a path of two names.
        kind = "Function " if len(parts) > 2 else ""
        obj = _module_member(
            module, attrs[0], f"{kind}{attrs[0]} is not a member of {module.__name__}"
        )
        if tasks_framework.is_task(obj):
            _check_defined(obj.func, attrs[0], obj.func.__name__, path, prefixes)
            if obj.module_path != path:
                raise CallableError(
                    f"{path!r} is the Django task {obj.module_path!r}: name it where it is "
                    "defined, the path a worker imports it back from"
                )
            return Target(path, DJANGO_TASK, module, None, obj.func, task=obj)
        _check_plain_function(obj, path)
        _check_defined(obj, attrs[0], obj.__qualname__, path, prefixes)
        return _checked(Target(path, FUNCTION, module, None, obj))

    class_name, func_name = attrs
    cls = _module_member(
        module, class_name, f"Class {class_name} is not a member of {module.__name__}"
    )
    if not isinstance(cls, type):
        raise CallableError(
            f"{module.__name__}.{class_name} is not a class (it is {type(cls).__name__}): a "
            "task's callable is a function of a module or a method of a class defined in it"
        )
    _check_defined(cls, class_name, cls.__qualname__, path, prefixes)
    raw = _class_member(cls, func_name, path)
    if tasks_framework.is_task(raw):
        raise CallableError(
            f"{path!r} is a Django task defined on a class: a worker finds a Django task by its "
            "module-level name, define it at the top level of its module"
        )
    if isinstance(raw, classmethod):
        func_type, func = CLASSMETHOD, raw.__func__
    elif isinstance(raw, staticmethod):
        func_type, func = STATICMETHOD, raw.__func__
    elif inspect.isfunction(raw):
        func_type, func = INSTANCEMETHOD, raw
    elif not callable(raw):
        raise _not_callable(path, raw)
    else:
        raise CallableError(f"{path!r} is not a method (it is {type(raw).__name__})")
    if not inspect.isfunction(func):
        raise CallableError(
            f"{path!r} is a {func_type} of a {type(func).__name__}, not of a Python function"
        )
    # A method may be inherited, from a base class defined under an allowed prefix too.
    _check_defined(func, func_name, func.__name__, path, prefixes)
    if func_type == INSTANCEMETHOD:
        from django.db import models

        if issubclass(cls, models.Model) and cls._meta.abstract:
            raise CallableError(
                f"{path!r} is an instance method of the abstract model {cls.__qualname__}, "
                "which has no rows: name it on the concrete model whose row it runs on"
            )
        if not issubclass(cls, models.Model):
            raise CallableError(
                f"{path!r} is an instance method of {cls.__qualname__}, which is not a "
                "Django model: only model instance methods can be bound to a row",
                sisy_message=(
                    f"Can only call instance methods of Django model objects, not {path}."
                ),
            )
    return _checked(Target(path, func_type, module, cls, func))


def django_task(path: str) -> Any:
    """The module-level Django task at ``path``, by :func:`locate`'s rule (what a worker may
    enqueue or run); a CallableError for anything else."""
    target = locate(path)
    if target.func_type != DJANGO_TASK:
        raise CallableError(f"{path!r} is not a Django task (it is a {target.func_type})")
    return target.task


def _module_member(module: types.ModuleType, name: str, sisy_message: str) -> Any:
    try:
        return getattr(module, name)
    except AttributeError:
        raise CallableError(
            f"{module.__name__!r} has no attribute {name!r}", sisy_message=sisy_message
        ) from None


def _class_member(cls: type, name: str, path: str) -> Any:
    """``name`` as defined in ``cls`` or a base class (not its metaclass), descriptors unapplied."""
    for klass in cls.__mro__:
        if name in vars(klass):
            return vars(klass)[name]
    owner = ".".join(path.split(".")[:-1])
    raise CallableError(
        f"{owner!r} has no attribute {name!r}",
        sisy_message=f"Function {name} is not a member of {owner}",
    )


def _not_callable(path: str, obj: Any) -> CallableError:
    return CallableError(
        f"{path!r} is not callable (it is {type(obj).__name__})",
        sisy_message=f"{path} ({str(type(obj))[1:-1]}) is not a callable object",
    )


def _check_plain_function(obj: Any, path: str) -> None:
    if inspect.ismodule(obj):
        raise CallableError(
            f"{path!r} is a module, not a callable", sisy_message="Cannot call module directly"
        )
    if inspect.isclass(obj):
        raise CallableError(
            f"{path!r} is a class, not a callable: name one of its methods",
            sisy_message="Cannot call class directly",
        )
    if not callable(obj):
        raise _not_callable(path, obj)
    if not inspect.isfunction(obj):
        raise CallableError(
            f"{path!r} is a {type(obj).__name__}; give a function, a classmethod, "
            "a staticmethod or a model instance method"
        )


def _check_defined(
    obj: Any, named: str, name: str, path: str, prefixes: tuple[str, ...] | None
) -> None:
    """``obj``, called ``named`` in ``path``, is ``name`` where it is defined, under an allowed
    prefix if ``prefixes`` are given: not an alias, nor an object imported from elsewhere."""
    defined = f"{obj.__module__}.{obj.__qualname__}"
    if name != named:
        raise CallableError(
            f"{path!r} is {defined}, not an object of that name: name it where it is defined"
        )
    if prefixes is not None and not any(conf.is_under(obj.__module__, p) for p in prefixes):
        raise CallableRefused(
            f"refused: {path!r} is {defined}, defined outside the module prefixes of "
            f"{_allowlist_text(prefixes)}"
        )


def _checked(target: Target) -> Target:
    """Check what the target's function is: its kind of body, and Sisy's signature contract."""
    func, path = target.func, target.path
    if inspect.isgeneratorfunction(func) or inspect.isasyncgenfunction(func):
        raise CallableError(f"{path!r} is a generator function: calling it would not run its body")
    _check_signature(func, path, target.func_type)
    return target


def _check_signature(func: Any, path: str, func_type: str) -> None:
    """Sisy's contract: the callable takes exactly one parameter, ``message``."""
    try:
        params = list(inspect.signature(func).parameters.values())
    except (TypeError, ValueError) as exc:
        raise CallableError(f"cannot read the signature of {path!r}: {exc}") from exc
    # What Sisy's func_from_string counted: an instance method unbound (self too),
    # a classmethod bound (without cls).
    seen_by_sisy = len(params) - (func_type == CLASSMETHOD)
    if func_type in (CLASSMETHOD, INSTANCEMETHOD):
        params = params[1:]  # self or cls
    names = [p.name for p in params]
    if names != [PARAMETER_NAME] or params[0].kind not in (
        inspect.Parameter.POSITIONAL_OR_KEYWORD,
        inspect.Parameter.POSITIONAL_ONLY,
    ):
        shown = ", ".join(names) or "no parameters"
        raise CallableError(
            f"{path!r} must take exactly one parameter named 'message' (it takes: {shown})",
            sisy_message=(
                "Task function must have one parameter, named 'message'"
                if seen_by_sisy == 1
                else "Improper signature for task function (needs only 'message')"
            ),
        )


def _model_pk(target: Target, pk: Any) -> Any:
    """``pk`` as the primary key of an instance method's model (None for other callables)."""
    from django.core.exceptions import ValidationError

    path = target.path
    if target.func_type != INSTANCEMETHOD:
        if pk is not None:
            raise CallableError(
                f"pk_override is only for model instance methods; {path!r} is a {target.func_type}"
            )
        return None
    cls: Any = target.cls
    if pk is None:
        raise unbound_error(target)
    try:
        return cls._meta.pk.to_python(pk)
    except ValidationError as exc:
        raise CallableError(
            f"pk_override {pk!r} is not a valid primary key for {cls.__name__}: "
            f"{'; '.join(exc.messages)}"
        ) from exc


def unbound_error(target: Target) -> CallableError:
    """The error for an instance method given without the row it is to run on."""
    cls: Any = target.cls
    return CallableError(
        f"{target.path!r} is an instance method: pass pk_override= with the primary key "
        f"of the {cls.__name__} row it runs on",
        sisy_message=(
            "Can't call instance method without an instance! (Try sisy.models.task_with_callable)"
        ),
    )


def _path_of(obj: Any) -> tuple[str, Any]:
    """Dotted path of a callable object, plus the instance it is bound to (if any)."""
    if isinstance(obj, str):
        return obj, None
    if tasks_framework.is_task(obj):
        return obj.module_path, None
    target, instance = obj, None
    if inspect.ismethod(obj):
        target = obj.__func__
        if not isinstance(obj.__self__, type):
            instance = obj.__self__
        # Named on the class it is bound to, not the base class that defines it:
        # the worker then binds it as the caller did (a subclass's overrides kept).
        owner = obj.__self__ if instance is None else type(instance)
        module_name = getattr(owner, "__module__", None)
        qualname = getattr(owner, "__qualname__", None)
        if module_name and qualname and "<" not in qualname:
            return f"{module_name}.{qualname}.{target.__name__}", instance
    if inspect.ismodule(obj):
        raise CallableError(
            f"{obj.__name__!r} is a module, not a callable",
            sisy_message="Cannot call module directly",
        )
    if inspect.isclass(obj):
        raise CallableError(
            f"{obj.__qualname__!r} is a class, not a callable",
            sisy_message="Cannot call class directly",
        )
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

    Raises CallableError (a ValueError) naming the problem: anything
    :func:`locate` refuses (a path outside SISY_ALLOWED_CALLABLES is
    CallableRefused, checked before any import), an instance method without
    a row to run on, or whose row does not exist.
    """
    path, instance = _path_of(the_callable)
    if instance is not None and pk_override is None:
        pk_override = getattr(instance, "pk", None)
        if pk_override is None:
            raise CallableError(
                f"{path!r} is bound to an unsaved {type(instance).__name__}: save it first"
            )
    target = locate(path)
    using = None
    if tasks_framework.is_task(the_callable):
        # A Task object: the one its path names, or a .using() of it.
        with _as_callable_error():
            task_targets.check_module_level(the_callable, path, target.task)
            using = task_targets.using_of(the_callable, target.task)
    return _described(target, pk_override, using)


@contextlib.contextmanager
def _as_callable_error() -> Iterator[None]:
    """A Django task's refusal (task_targets) raised as the CallableError every edge handles."""
    try:
        yield
    except task_targets.TaskTargetError as exc:
        raise CallableError(str(exc)) from None


def _described(target: Target, pk_override: Any, using: Any = None) -> dict[str, Any]:
    """The description of ``target``, an instance method's row checked to exist, a Django
    task's ``using`` checked by its backend."""
    if target.func_type == DJANGO_TASK:
        if pk_override is not None:
            raise CallableError(
                f"pk_override is only for model instance methods; {target.path!r} is a Django task"
            )
        with _as_callable_error():
            task_targets.with_using(target.task, target.path, using)
        info = target.info()
        if using:
            info["using"] = using
        return info
    pk = _model_pk(target, pk_override)
    if pk is not None:
        cls: Any = target.cls
        if not cls._default_manager.filter(pk=pk).exists():
            raise CallableError(f"{cls.__name__} with pk={pk!r} does not exist")
    return target.info(str(pk) if isinstance(pk, uuid.UUID) else pk)


def _stored_target(info: Any) -> Target:
    """What a stored description names, by :func:`locate`; its ``func_type`` must agree.

    A row that says "function" for a path that is a classmethod (written by
    hand, or left behind by a change of the code) is refused rather than
    guessed at: describing the path again (the admin's form does) mends it.
    """
    path = info.get("func_path") if isinstance(info, dict) else None
    if not isinstance(path, str) or not path:
        raise CallableError("the callable description must be a dict with a 'func_path'")
    stored = info.get("func_type")
    if stored not in FUNC_TYPES:
        raise CallableError(f"unknown func_type {stored!r}")
    target = locate(path)
    if target.func_type != stored:
        raise CallableError(
            f"{path!r} is stored with func_type {stored!r}, but its func_type is "
            f"{target.func_type!r}: describe it again (task.funcinfo = "
            f"funcinfo_from_string({path!r}), or save it from the admin's form)"
        )
    return target


def validate_info(info: Any) -> dict[str, Any]:
    """Check a stored description (from a form, fixture or raw SQL) by the worker's rule;
    return it complete."""
    return _described(_stored_target(info), info.get("model_pk"), info.get("using"))


def check_arguments(info: dict[str, Any], userdata: Any) -> None:
    """For a Django task, check ``userdata`` as its keyword arguments (a CallableError if not)."""
    if info.get("func_type") != DJANGO_TASK:
        return
    target = _stored_target(info)
    with _as_callable_error():
        task = task_targets.with_using(target.task, target.path, info.get("using"))
        task_targets.check_arguments(task, target.path, userdata)


def resolve(
    info: dict[str, Any], using: str | None = None, userdata: Any = None
) -> Callable[[Any], Any]:
    """Return the callable a stored description names, bound to its model row if any.

    For a Django task, the callable enqueues it with ``userdata`` as its
    keyword arguments (checked now), recording the run in database ``using``.

    The description may come from raw SQL, so it is not trusted: it must
    name what :func:`locate` allows (a path outside SISY_ALLOWED_CALLABLES
    is refused before anything is imported) as the ``func_type`` it states.
    The row of an instance method is fetched now, from database ``using``,
    so the method sees the row as it is when the run starts.
    """
    from django.core.exceptions import ObjectDoesNotExist

    target = _stored_target(info)
    if target.func_type == DJANGO_TASK:
        from . import procrastinate_seam

        with _as_callable_error():
            task = task_targets.with_using(target.task, target.path, info.get("using"))
            kwargs = task_targets.check_arguments(
                task, target.path, {} if userdata is None else userdata
            )
        return task_targets.Enqueuer(task, kwargs, using or procrastinate_seam.database_alias())
    pk = _model_pk(target, info.get("model_pk"))
    if target.func_type != INSTANCEMETHOD:
        return target.bind()
    cls: Any = target.cls
    try:
        instance = cls._default_manager.db_manager(using).get(pk=pk)
    except ObjectDoesNotExist:
        raise CallableError(f"{cls.__name__} with pk={pk!r} does not exist (any more)") from None
    return target.bind(instance)
