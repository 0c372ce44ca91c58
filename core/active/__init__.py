"""Active learning: query strategies and the labelling queue."""
