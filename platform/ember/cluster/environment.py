"""What every Ember process that talks to Ray needs in its environment.

A light module (no Ray import): the CLI applies it before any command runs.
RAY_AUTH_MODE=token because a Ray 2.60 head requires its token and Ray's
clients default to sending none (STACK.md); HF_HUB_OFFLINE because no model
hub is assumed; no usage stats.
"""

CLIENT_ENV = {"RAY_AUTH_MODE": "token", "HF_HUB_OFFLINE": "1", "RAY_USAGE_STATS_ENABLED": "0"}
