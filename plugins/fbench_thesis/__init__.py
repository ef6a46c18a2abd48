"""The thesis datasets: FFHQ (real), three GANs (generated) and FaceForensics++ frames (edited),
prepared from the user's own copies, built into the thesis's recipes (``1``-``4``, ``seg_2``)
with grouped splits, or imported from the thesis's own split lists.

See ``docs/datasets.md`` for the layout under a sources root and the commands."""
