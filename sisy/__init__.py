"""Compatibility package: code written for the original Sisy imports from here.

``from sisy.models import Task, task_with_callable, taskinfo_with_label`` keeps
working; the Django app to install is ``sisy_pg`` (its label is ``sisy``).
"""
