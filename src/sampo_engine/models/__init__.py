"""SAM models: architecture registry and builders, LoRA adapters, the batched differentiable forward."""
