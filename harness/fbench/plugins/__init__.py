"""The door: hook specifications, spec records, the protocols of what the core calls on a
plugin's objects, the registry, and the types a plugin's detector speaks (Batch, Detector)."""
