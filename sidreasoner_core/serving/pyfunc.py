"""The MLflow pyfunc flavour of a SIDReasoner bundle: what `mlflow models serve` and
`mlflow.pyfunc.load_model` run.

Request: a DataFrame with a `history` column (list of item ids, oldest first); params `k`
(items to return) and `mode` ("direct" or "thinking"). Answer: one row per history with
`recommendations` (list of {item_id, title, sid, score}, best first) and `reasoning` (thinking
mode). A bad request raises an MlflowException with INVALID_PARAMETER_VALUE, which the scoring
server answers with HTTP 400 and the message.
"""
from __future__ import annotations

import mlflow.pyfunc

BUNDLE = "bundle"   # the name of the bundle directory among the MLflow model's artifacts


def signature(default_k: int = 10, default_mode: str = "direct"):
    from mlflow.models import ModelSignature
    from mlflow.types.schema import Array, ColSpec, DataType, Object, ParamSchema, ParamSpec, Property, Schema

    item = Object([Property("item_id", DataType.string), Property("title", DataType.string),
                   Property("sid", DataType.string), Property("score", DataType.double)])
    return ModelSignature(
        inputs=Schema([ColSpec(Array(DataType.string), "history")]),
        outputs=Schema([ColSpec(Array(item), "recommendations"),
                        ColSpec(DataType.string, "reasoning", required=False)]),
        params=ParamSchema([ParamSpec("k", DataType.long, default_k), ParamSpec("mode", DataType.string, default_mode)]),
    )


class SIDReasonerModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context):
        from .recommender import Recommender

        self.recommender = Recommender.load(context.artifacts[BUNDLE])

    def predict(self, context, model_input, params=None):
        import pandas as pd
        from mlflow.exceptions import MlflowException
        from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

        from .recommender import RequestError

        params = params or {}
        if not isinstance(model_input, pd.DataFrame) or "history" not in model_input.columns:
            raise MlflowException("the request needs a `history` column: a list of item ids per row",
                                  error_code=INVALID_PARAMETER_VALUE)
        histories = [list(h) if h is not None and not isinstance(h, str) else h for h in model_input["history"]]
        k = params.get("k")
        try:
            answers = self.recommender.recommend(histories, k=None if k is None else int(k), mode=params.get("mode"))
        except RequestError as exc:
            raise MlflowException(str(exc), error_code=INVALID_PARAMETER_VALUE) from None
        return pd.DataFrame({"recommendations": [a.recommendations for a in answers],
                             "reasoning": [a.reasoning for a in answers]})
