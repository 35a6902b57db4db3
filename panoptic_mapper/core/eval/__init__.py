"""Evaluation: metrics (``metrics``), surface sampling and visibility (``surface``), the run loop
behind ``panoptic-mapper eval`` (``runner``), its reports (``report``) and the oracle map
(``oracle``). See ``docs/evaluation.md``."""
