"""The built-in ``synthetic`` dataset: procedurally generated face-like images in the three
fbench classes (real, generated, edited with masks), so fbench runs with no download.

The classes differ the way real forgeries do (spectra, resampling and colour traces), never by
global colour statistics or file size; see :mod:`fbench_synthetic.generate`.
"""

from fbench_synthetic.plugin import default_cache_dir, load_synthetic

__all__ = ["default_cache_dir", "load_synthetic"]
