"""Built-in F3Net detectors (Qian et al., ECCV 2020, "Thinking in Frequency") as the thesis
built them, plus its multi-task (Mix + Seg) variant.

The heads are public for reuse (GraftNet builds on them): :class:`fbench_f3net.fad.FADHead`,
:class:`fbench_f3net.lfs.LFSHead`, :class:`fbench_f3net.mixblock.MixBlock`,
:class:`fbench_f3net.seg.SegDecoder`, :class:`fbench_f3net.xception.XceptionBackbone`.
Importing this package stays light: torch and timm are imported by the submodules only."""
