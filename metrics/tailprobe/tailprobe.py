"""The tail-sentiment probe metric for 🤗 evaluate, from the repository: ``evaluate.load("metrics/tailprobe")``.

The metric itself ships inside the poolbench package (``src/poolbench/hub/metric/tailprobe.py``;
``evaluate.load(poolbench.hub.METRIC)`` loads it from an installed poolbench, from any directory);
this file only makes the repository path work too.
"""

from poolbench.hub.metric.tailprobe import Tailprobe  # noqa: F401
