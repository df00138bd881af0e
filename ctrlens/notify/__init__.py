"""Alerts delivered where people look: webhooks (Slack / JSON), an e-mail digest, a command; and
Prometheus metrics (the dashboard's ``/metrics``, a node_exporter textfile).

* :mod:`ctrlens.notify.config` -- the ``notify:`` / ``metrics:`` sections of the nightly YAML;
* :mod:`ctrlens.notify.messages` -- what is sent (Slack blocks, JSON rows, the e-mail digest);
* :mod:`ctrlens.notify.deliver` -- exactly-once delivery through the store's delivery log, retries;
* :mod:`ctrlens.notify.prometheus` -- the metrics in OpenMetrics text.

See docs/alerts.md, "Getting alerts".
"""

from ctrlens.notify.config import Channel, NotifyConfig, NotifyConfigError, Retry, Smtp, parse_notify

__all__ = ["Channel", "NotifyConfig", "NotifyConfigError", "Retry", "Smtp", "parse_notify"]
