"""sisy's migrations in a simulated later release: the real ones, then 0003_later."""
