"""The data behind each page: the embedding map, clusters, pseudo-labels, runs."""
