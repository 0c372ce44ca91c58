"""Background work: the job queue on the store and the worker process that runs it."""
