"""SimSeq, the default model: ``params`` (its params.yaml section), ``features`` (the transition
features it reads), ``network`` (GRU or dilated-conv network, and the average with the trees),
``trees`` (boosted trees kept as tensors), ``training`` (its training loop), ``kind`` (the ModelKind
adapter). This file imports nothing."""
