"""Built-in GraftNet detectors: the thesis's own "multi-model graft attention" model
(``graftnet``) and its multi-task variant with a mask decoder (``graftnet-seg``).

They reuse F3Net's frequency heads (:class:`fbench_blocks.frequency.FADHead`,
:class:`fbench_blocks.frequency.LFSHead`) and the multi-task loss
(:func:`fbench_blocks.losses.multitask_loss`) from the shared :mod:`fbench_blocks`.
Importing this package stays light: torch and timm are imported by the submodules only."""
