"""sisy-pg: Sisy's database-defined recurring tasks, rebuilt on PostgreSQL and procrastinate."""

__version__ = "0.2.0.dev0"
