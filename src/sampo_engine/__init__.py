"""sampo_engine: fine-tune Segment Anything for nuclei with SAMPO — no Qt, no napari.

Layout (one concept per module):

- ``models``      building SAM vit_b/l/h/tiny at any input size, LoRA adapters, the batched forward
- ``weights``     the official checkpoints: cache folder, download, SHA-256
- ``data``        synthetic H&E-like tiles, dataset readers, training crops
- ``prompts``     online prompt-centric preference mining and the seeded evaluation sampler
- ``losses``      DPO preference terms (inter/intra) and the supervised term
- ``train``       the trainer, its config dataclass and the adapter bundle
- ``cli``         ``sampo-engine train | eval | predict | weights``

Importing this package is cheap: torch and peft are imported by the submodules that need them.
"""

from sampo_engine._version import __version__

__all__ = ["__version__"]
