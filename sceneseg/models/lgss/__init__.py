"""LGSS (Rao et al. 2020), the published recipe: ``params`` (its params.yaml section), ``network``
(the boundary network and BiLSTM, fast and literal forms), ``inference`` (windows gathered from a
shot bank, batched prediction), ``training`` (its training loop), ``kind`` (the ModelKind adapter).
This file imports nothing."""
