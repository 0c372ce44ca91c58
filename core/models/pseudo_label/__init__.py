"""Iterative pseudo-labelling with transfer learning (CNN fine-tuning, images and audio)."""
