"""The data behind each page: map (Embeddings), clusters, pseudo_labels, consensus, runs (comparison),
suggestions (Label), identities, similar, selection, audit (Admin), projection (the cached UMAP), with the shared
readers in common and text (user and file text shown literally: Markdown and HTML escaping)."""
