"""From a config to a trained, evaluated model: the frozen run config, resolution against the
registry, the engine, distributed helpers, metrics, weight loading."""
