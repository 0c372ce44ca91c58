"""Scores: clustering and classification metrics, and scoring runs against reference labels."""
