"""Serving: the trained model packaged with its catalogue as an MLflow pyfunc model, and the
recommender behind it (used by `mlflow models serve`, `sidreasoner recommend` and the promotion gate)."""
