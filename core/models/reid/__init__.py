"""Unsupervised re-identification (issue 14): k-reciprocal Jaccard, constrained DBSCAN, camera-aware proxies."""
