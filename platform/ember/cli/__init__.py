"""The `ember` console script."""
