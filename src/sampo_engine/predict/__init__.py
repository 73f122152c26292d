"""Prediction outputs: splitting a foreground probability map into nucleus instances, and
exporting instance maps (TIFF, QuPath GeoJSON, per-nucleus CSV)."""
