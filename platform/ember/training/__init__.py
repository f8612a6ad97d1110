"""Fine-tuning: SFT data preparation, the model wrapper, the training loop, export."""
