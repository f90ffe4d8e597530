"""One frozen config dataclass per stage, validated once, saved as JSON next to the stage's output."""
from ufl.config.base import ConfigError
from ufl.config.preprocess import PreprocessConfig
from ufl.config.train import TrainConfig
from ufl.config.export import ExportConfig

__all__ = [
    "ConfigError",
    "ExportConfig",
    "PreprocessConfig",
    "TrainConfig",
]
