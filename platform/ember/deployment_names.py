"""Names of Ember's Serve deployments that other code finds them by.

An engine deployment is `LLMServer:<model>`: the serving builder names it, the
usage keeper counts its RUNNING replicas for measured cost, and `ember status`
and the tests find a model's replicas by it. A bottom module, so the access
layer (the keeper) and the serving layer (the builder) share one spelling.
"""

LLM_DEPLOYMENT_PREFIX = "LLMServer"  # deployments are named `LLMServer:<model>`
