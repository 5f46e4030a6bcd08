"""The released sisy.0001_initial, unchanged."""

import importlib

Migration = importlib.import_module("sisy_pg.migrations.0001_initial").Migration
