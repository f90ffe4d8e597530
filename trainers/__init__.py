"""ufl.trainers: feature learners (sparse coding, autoencoders, Foldiak) and the one training loop."""
from ufl.trainers.base import FeatureLearner
from ufl.trainers.registry import build_model, model_kinds, register_model

__all__ = ["FeatureLearner", "build_model", "model_kinds", "register_model"]
