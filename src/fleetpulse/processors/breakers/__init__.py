"""Fleet-wide circuit breakers: ``machine.py`` is the resilience4j-style state machine and the
call classification (pure, table-tested); ``stage.py`` runs it on Kafka."""
