"""The core tier: exact linear assignment, permutation specs, permutations and matching.

Needs only numpy (torch tensors are accepted where torch is installed):
:mod:`~trajtransfer.core.lap`, :mod:`~trajtransfer.core.spec`, :mod:`~trajtransfer.core.spec_fx`,
:mod:`~trajtransfer.core.permute`, :mod:`~trajtransfer.core.match`.
"""
