"""Training: the config dataclass (shared by CLI and GUI), the trainer loop, the adapter bundle."""
