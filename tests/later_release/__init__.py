"""A simulated later release of sisy-pg, for tests/e2e/test_upgrade_rule.py.

- ``settings``: a project whose sisy migrations are ``sisy_migrations`` (the real
  0001_initial plus a simulated ``0002_later`` that follows the upgrade rule);
- ``aaa_seeds``: an app with Sisy's documented data migrations, depending on
  ``('sisy', '0001_initial')`` only. Its label sorts before ``sisy``, so
  ``migrate`` runs its migrations before ``sisy.0002_later`` (Django plans the
  leaf nodes of the apps in label order): the order the rule is about.
"""
