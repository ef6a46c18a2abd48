"""Built-in perturbations (JPEG, blur, noise, down-and-up resize, centre crop) for
``fbench robustness``: transform plugins applied to eval images before a run's own transform."""
