"""Evaluation: overlap metrics for semantic masks (IoU, Dice, pooled sums) and instance metrics
(PQ = DQ·SQ, AJI, detection F1) computed as HoVer-Net / CellViT compute them."""
