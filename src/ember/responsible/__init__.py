"""Responsible AI: privacy (DP-SGD, accountants, membership audits) and federated learning.

Importing it registers the training hooks its config sections need (``privacy``).
"""

from ember.responsible import privacy

__all__ = ["privacy"]
