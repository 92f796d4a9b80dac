"""Run the real infrastructure locally without Docker: Apache Kafka in KRaft mode from Maven
Central jars, with fleetpulse's topics."""

from fleetpulse.devstack.jars import ensure_jars
from fleetpulse.devstack.kafka import KafkaNode, KafkaNodeConfig, free_port
from fleetpulse.devstack.stack import Devstack
from fleetpulse.devstack.topics import ensure_topics

__all__ = ["Devstack", "KafkaNode", "KafkaNodeConfig", "ensure_jars", "ensure_topics", "free_port"]
