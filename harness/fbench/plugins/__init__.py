"""The door: hook specifications, spec records, the registry, and the types a plugin's detector
speaks (Batch, Detector)."""
