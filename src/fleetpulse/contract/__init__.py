"""The contract every part of fleetpulse shares: the bottom layer, importing no other layer.

  errors.py          the one error hierarchy (FleetpulseError and its subclasses)
  events/            Avro schemas, the codec at the Kafka boundary, one strict validation
  semantics.py       outcome classes, scope keys
  topics.py          topic names; config.py the FLEETPULSE_* settings; kafka_config.py
                     librdkafka's dicts built from them; stack_state.py the devstack's file
  clock.py           the injected clock
  policy.py          the fleet policy (roles, permissions, breakers), with alert_rules.py
                     (its ``alerts:`` section and label matching) and schedule.py
  bundles.py         agent bundles; limits.py the bounds of every control-plane input
  governance.py      the governance fold (versions, approvals, pauses, roles, silences)
  control_state.py   the records of fleetpulse.control; breakers.py breaker ids and records
  horizons.py        window horizons (the processors' setting); sql.py ClickHouse literals

Layers, each importing only the ones below it (checked by ``make lint`` and
tests/unit/test_layers.py; docs/ARCHITECTURE.md draws them):
contract, then sdk, then processors | sink | control | paging | devstack, then console, sim
and the CLI. Importing this package loads nothing: import the module you need.
"""

__all__: list[str] = []
