"""Getting data in and out: import from folders and manifests, media checks, export, the demo project."""
