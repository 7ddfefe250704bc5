"""What every command file shares: exit codes, the usage error, the config argument."""

from fsapp.cli import EXIT_BAD_INPUT, EXIT_OK, EXIT_RUNTIME, UsageError, load_config
from fsapp.cli import _config_arg as config_arg

__all__ = ["EXIT_BAD_INPUT", "EXIT_OK", "EXIT_RUNTIME", "UsageError", "config_arg", "load_config"]
