"""Model families, one folder each (classifier/, dec/, pseudo_label/), their registry
(:mod:`core.models.registry`), the trainer contract (:mod:`core.models.context`) and the train job that
publishes runs (:mod:`core.models.training`)."""
from core.models.context import TrainContext, TrainOutput
from core.models.registry import FAMILIES, LABEL_FREE, MODELS, Family, get_trainer

__all__ = ["TrainContext", "TrainOutput", "FAMILIES", "LABEL_FREE", "MODELS", "Family", "get_trainer"]
