"""Built-in frequency-domain transforms (``dct``, ``dft``, ``dft-legacy``). The DFT maths is
here (:mod:`fbench_frequency.dft`); the DCT is the shared :mod:`fbench_blocks.dct`, which
frequency detectors such as F3Net use too.

Importing this package stays light: torch is imported by the submodules only."""
