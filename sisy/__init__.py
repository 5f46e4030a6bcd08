"""Compatibility package: code written for the original Sisy imports from here.

``from sisy.models import Task, task_with_callable, taskinfo_with_label`` (and
Sisy's helpers ``get_func_info``, ``func_from_string``, ...) keeps working; the
Django app to install is ``sisy_pg`` (its label is ``sisy``).
"""
