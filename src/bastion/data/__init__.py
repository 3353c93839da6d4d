"""Training-data security: integrity manifests, poisoning audits, sanitizing with validation.

The subpackages import their heavy dependencies (pandas, scikit-learn, cryptography) themselves, so that
importing ``bastion.data.audit.rules`` for the rule catalogue stays cheap and works without the extra.
"""
