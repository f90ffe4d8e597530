"""One frozen config dataclass per stage, validated once, saved as JSON next to the stage's output."""
from ufl.config.base import ConfigError, load_config_json, save_config_json
from ufl.config.preprocess import PreprocessConfig
from ufl.config.train import TrainConfig
from ufl.config.export import ExportConfig

__all__ = [
    "ConfigError",
    "ExportConfig",
    "PreprocessConfig",
    "TrainConfig",
    "load_config_json",
    "save_config_json",
]
