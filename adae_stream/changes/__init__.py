"""Sequential change detection on the label-free streams of every detector (flags, score shape, class mix),
over the whole fleet: the charts (cusum.py), the chart sets with their warm-up baselines (charts.py), the fleet
monitor that feeds them the replicas' batch summaries (monitor.py) and its process-side service (service.py)."""
