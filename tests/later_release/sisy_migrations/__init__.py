"""sisy's migrations in a simulated later release: the real 0001_initial, then 0002_later."""
