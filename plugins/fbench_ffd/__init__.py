"""Built-in FFD detector (Dang et al., CVPR 2020, "On the Detection of Digital Face
Manipulation"): Xception with an attention map after its middle flow, the map trained with full,
weak or no supervision.

The attention layer is public for reuse: :class:`fbench_ffd.attention.RegressionMap`.
Importing this package stays light: torch and timm are imported by the submodules only."""
