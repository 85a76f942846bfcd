"""SFT and PEFT training on transformers' Trainer (custom losses are ``compute_loss`` overrides)."""
