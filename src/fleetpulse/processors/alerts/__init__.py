"""Alerting: ``rules.py`` (the policy's alert rules), ``windows.py`` (what the rules read),
``evaluator.py`` (rules over the task stream, suppression), ``lifecycle.py`` (pending, firing,
resolved), all pure; ``stage.py`` runs them on Kafka."""
