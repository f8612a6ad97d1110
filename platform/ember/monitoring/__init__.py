"""Monitoring: a Prometheus that scrapes the Ray cluster, and Ember's Grafana dashboard."""
