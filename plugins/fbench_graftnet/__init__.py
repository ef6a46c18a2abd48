"""Built-in GraftNet detectors: the thesis's own "multi-model graft attention" model
(``graftnet``) and its multi-task variant with a mask decoder (``graftnet-seg``).

They reuse F3Net's frequency heads (:class:`fbench_f3net.fad.FADHead`,
:class:`fbench_f3net.lfs.LFSHead`) and mask losses (:func:`fbench_f3net.seg.mask_losses`).
Importing this package stays light: torch and timm are imported by the submodules only."""
