"""Governance: the model registry, signing, policy gates, model cards, the AI-BOM and the compliance map.

Modules are imported where they are used, so that ``bastion --help`` stays fast.
"""
