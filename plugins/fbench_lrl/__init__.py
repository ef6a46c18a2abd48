"""Built-in LRL detector (Chen et al., AAAI 2021, "Local Relation Learning for Face Forgery
Detection"): RGB and high-pass-DCT streams on timm backbones, RGB-frequency attention fusing
them at several depths, and a multi-scale patch-similarity loss whose targets come from the
forgery mask.

Parts public for reuse: :class:`fbench_lrl.staged.StagedFeatures` (a timm ``features_only``
backbone run level by level), :class:`fbench_lrl.highpass.HighPassDCT`,
:class:`fbench_lrl.rfam.RGBFrequencyAttention`, :mod:`fbench_lrl.similarity`.
Importing this package stays light: torch and timm are imported by the submodules only."""
