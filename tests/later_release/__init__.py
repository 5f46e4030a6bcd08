"""Sisy-style projects on three releases of sisy-pg, for tests/e2e/test_upgrade_rule.py.

- ``settings``: a project whose sisy migrations are the module ``SISY_MIGRATIONS``
  names:

  - ``sisy_migrations_0_1_0``: as release 0.1.0 shipped them (0001_initial alone);
  - ``sisy_pg.migrations``: the real head;
  - ``sisy_migrations`` (the default): a simulated later release, the real
    migrations then ``0003_later``, which follows the upgrade rule;
- ``aaa_seeds``: an app with Sisy's documented data migrations, depending on
  ``('sisy', '0001_initial')`` only. Its label sorts before ``sisy``, so
  ``migrate`` runs its migrations before sisy's later ones (Django plans the
  leaf nodes of the apps in label order): the order the rule is about.
"""
