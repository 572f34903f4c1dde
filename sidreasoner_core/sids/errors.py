class SidsError(ValueError):
    """Bad input to the SID stage (empty item text, bad embeddings, code space too small, ...)."""
