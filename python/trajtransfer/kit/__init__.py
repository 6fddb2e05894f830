"""The experiment kit: reference models, datasets, training, paper presets, CLI and plots.

:mod:`~trajtransfer.kit.models`, :mod:`~trajtransfer.kit.data`, :mod:`~trajtransfer.kit.training`,
:mod:`~trajtransfer.kit.presets`, :mod:`~trajtransfer.kit.cli`, :mod:`~trajtransfer.kit.plot`.
"""
