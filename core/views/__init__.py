"""The data behind each page: map (Embeddings), clusters, pseudo_labels, consensus, runs (comparison),
suggestions (Label), projection (the cached UMAP), with the shared readers in common."""
