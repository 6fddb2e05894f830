"""The method tier: learning transfer (GMT, FGMT, Naive, Oracle), trajectories, BatchNorm.

Needs torch: :mod:`~trajtransfer.method.transfer`, :mod:`~trajtransfer.method.trajectory`,
:mod:`~trajtransfer.method.bn`.
"""
