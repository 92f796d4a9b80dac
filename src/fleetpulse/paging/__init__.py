"""The paging bridge: ``fleetpulse.alerts`` to Alertmanager, PagerDuty, Slack and webhooks.

Read ``bridge.py`` first (delivery, retries, commits), then ``receivers.py`` (payloads)."""

from fleetpulse.paging.bridge import PagerBridge, run_pager
from fleetpulse.paging.config import PagerConfig, load_pager_config

__all__ = ["PagerBridge", "PagerConfig", "load_pager_config", "run_pager"]
