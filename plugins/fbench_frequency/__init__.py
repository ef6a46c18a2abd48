"""Built-in frequency-domain transforms (``dct``, ``dft``, ``dft-legacy``) and the reusable
DCT/DFT maths behind them (:mod:`fbench_frequency.dct`, :mod:`fbench_frequency.dft`), which
frequency detectors such as F3Net import.

Importing this package stays light: torch is imported by the submodules only."""
