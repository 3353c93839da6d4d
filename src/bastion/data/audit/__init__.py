"""Poisoning audit: independent detector channels over one dataset, and the report that joins them.

Importing this package is cheap; ``bastion.data.audit.run`` pulls in numpy, pandas and scikit-learn.
"""
