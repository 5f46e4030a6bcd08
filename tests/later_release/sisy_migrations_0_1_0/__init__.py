"""sisy's migrations as release 0.1.0 shipped them: 0001_initial alone."""
