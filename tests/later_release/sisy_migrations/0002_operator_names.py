"""The real sisy.0002_operator_names, unchanged."""

import importlib

Migration = importlib.import_module("sisy_pg.migrations.0002_operator_names").Migration
