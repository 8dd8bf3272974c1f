"""gpconv.train: what ``gpconv train`` runs.

* ``data``: digits / CIFAR-10 binary / image-folder loaders (channels-last, never pickle);
* ``sampling``: epoch plans (order, augmentation, dropout seeds) as functions of ``(seed, epoch)``;
* ``frameworks``: per-framework model + optimiser steps (numpy reference, torch, tensorflow);
* ``loop``: the one training loop; ``progress``: tqdm bar or plain lines;
* ``checkpoint``: atomic, verified safetensors + JSON checkpoints; ``metrics``: CSV and plots;
* ``distributed``: the torchrun process group;
* ``config``: ``RunConfig``, a run's arguments; ``outdir``: may a run folder be used or resumed
  (``outlock``: its lock); ``writer``: a run's result files; ``run``: a whole run from its
  ``RunConfig``.
"""
