"""SIDReasoner: reasoning-based generative recommendation over Semantic IDs.

Every stage is plain, typed Python here; `components/` wraps them for KFP.
"""
__version__ = "0.1.0"
