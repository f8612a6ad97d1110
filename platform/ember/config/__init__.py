"""Typed settings, YAML loading and Ember's directories."""
