"""Packaged default configs: ``{name, args}`` blocks by group (Hydra search path ``pkg://oml.configs``).

E.g. ``defaults: [optimizer: adam, sampler: balance]`` in a pipeline config pulls
``oml/configs/optimizer/adam.yaml`` and ``oml/configs/sampler/balance.yaml``.
"""
