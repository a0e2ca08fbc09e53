"""Token reduction inside a ViT: dropping, merging and view-guided retention of patch tokens."""
