"""Semi-supervised multi-modal Deep Embedded Clustering."""
