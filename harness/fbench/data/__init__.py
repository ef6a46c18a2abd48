"""From files to a checked manifest: the image reader, manifests, recipes and built datasets,
splits, the leakage audit, pre-run file checks, landmark caches, fingerprints, the shortcut
probe."""
