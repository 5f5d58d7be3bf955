"""Backbones, heads and the surgery that joins them (replace_head, freeze)."""
