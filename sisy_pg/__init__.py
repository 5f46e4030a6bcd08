"""sisy-pg: Sisy's database-defined recurring tasks, rebuilt on PostgreSQL and procrastinate."""

__version__ = "0.1.0"
