"""The evaluation stages' input errors (messages name the file, sample or item)."""


class EvaluationError(ValueError):
    pass
