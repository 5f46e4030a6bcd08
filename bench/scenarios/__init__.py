"""The bench's scenarios: each module's ``run(bench)`` measures one, beside its yardstick."""
