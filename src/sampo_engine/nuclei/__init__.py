"""Nucleus-level analysis on an instance map: descriptors and few-shot classification."""
