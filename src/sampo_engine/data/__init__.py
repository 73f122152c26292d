"""Nuclei data: the sample type, readers for the public datasets, synthetic tiles, training crops."""
