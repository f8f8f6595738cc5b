"""Config: pydantic models, loading with errors that name scene and field, hot reload.

The shipped defaults live beside this file (``scenes.yaml``).
"""

from config.loader import DEFAULT_CONFIG_PATH, load_config, load_config_text
from config.models import AppConfig

__all__ = ["DEFAULT_CONFIG_PATH", "AppConfig", "load_config", "load_config_text"]
