"""Hyperparameter sweeps over SFT jobs: search spaces, Optuna + ASHA wiring, MLflow."""
