"""Building blocks several built-in detectors share, in one place that registers nothing, so no
detector plugin imports another:

- :mod:`fbench_blocks.xception`: the Xception backbone of the F3Net streams and ffd-attention;
- :mod:`fbench_blocks.frequency`: F3Net's FAD and LFS heads (F3Net, GraftNet);
- :mod:`fbench_blocks.decoder`: the thesis's segmentation decoder (F3Net Mix + Seg, GraftNet,
  LRL);
- :mod:`fbench_blocks.losses`: soft Dice, BCE + Dice on rows with a known mask, the thesis's
  multi-task loss;
- :mod:`fbench_blocks.dct`: the orthonormal 2-D DCT on the device (the heads, LRL's high-pass,
  the ``dct`` transform);
- :mod:`fbench_blocks.options`: parsing list-valued ``--set`` options;
- :mod:`fbench_blocks.pointwise`: a strided 1 × 1 convolution oneDNN's channels_last CPU
  backward does not crash on (GraftNet).

Importing this package stays light: torch and timm are imported by the submodules only."""
