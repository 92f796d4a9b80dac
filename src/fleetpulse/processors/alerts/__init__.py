"""Alerting: ``windows.py`` (what the rules read), ``evaluator.py`` (rules over the task
stream, suppression), ``lifecycle.py`` (pending, firing, resolved), all pure; ``stage.py`` runs
them on Kafka. The rules themselves are the policy's ``alerts:`` section
(``contract/alert_rules.py``)."""
