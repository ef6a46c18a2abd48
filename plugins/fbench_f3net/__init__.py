"""Built-in F3Net detectors (Qian et al., ECCV 2020, "Thinking in Frequency") as the thesis
built them, plus its multi-task (Mix + Seg) variant.

Its building blocks other detectors reuse (the Xception backbone, the FAD and LFS heads, the
mask decoder and losses) live in :mod:`fbench_blocks`, which registers nothing; the MixBlock
(:class:`fbench_f3net.mixblock.MixBlock`) is F3Net's own.
Importing this package stays light: torch and timm are imported by the submodules only."""
