"""Alerting: ``windows.py`` (what the rules read), ``evaluator.py`` (rules over the task
stream, suppression), ``lifecycle.py`` (pending, firing, resolved), ``split.py`` (which alert
worker owns which alert, and what they exchange), all pure; ``stage.py`` runs them on Kafka.
The rules themselves are the policy's ``alerts:`` section (``contract/alert_rules.py``)."""
