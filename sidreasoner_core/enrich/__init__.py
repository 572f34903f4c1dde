"""Teacher enrichment (paper §3.2.3): item-centric and user-centric SID corpora.

A teacher (an OpenAI-compatible endpoint, or the offline rule-based one) writes
SID-centred item paragraphs and user reasoning traces; every answer is
validated, retried with the reason, and failures are reported, never dropped.
"""
