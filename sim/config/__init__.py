"""threedb.sim.config: load, merge, map and validate experiment configs.

>>> from threedb.sim.config import load_config
>>> experiment = load_config("configs/preview.yaml", overrides={"render.samples": 4})

See :func:`load_config`; every problem is a :class:`~threedb.sim.errors.ConfigError` naming the
file, the key path and what was expected.
"""
from threedb.sim.config.legacy import is_legacy, map_legacy
from threedb.sim.config.loader import (
    COMMAND_LINE, PATH_KEYS, Provenance, format_key, load_chain, parse_key, parse_override, read_yaml,
)
from threedb.sim.config.schema import (
    DEFAULT_POLICY, AssetsConfig, Experiment, ExperimentSchema, PolicyConfig, experiment_from_dict,
    load_config,
)
from threedb.sim.errors import ConfigError

__all__ = [
    "load_config", "experiment_from_dict", "Experiment", "AssetsConfig", "PolicyConfig", "ExperimentSchema",
    "ConfigError", "DEFAULT_POLICY", "COMMAND_LINE", "PATH_KEYS", "Provenance", "format_key", "parse_key",
    "parse_override", "read_yaml", "load_chain", "is_legacy", "map_legacy",
]
