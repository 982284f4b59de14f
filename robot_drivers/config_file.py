"""Reading a YAML config file (a session's, a bridge server's): one line naming the file and what is
wrong, never a traceback."""

from __future__ import annotations

import pathlib
from typing import Any

MAX_CONFIG_FILE_BYTES = 1 << 20
"""Largest config file read, bytes."""


class ConfigFileError(ValueError):
    """A config file that cannot be read as YAML; the message names the file."""


def read_yaml_file(path: str | pathlib.Path, what: str) -> Any:
    """The YAML document in ``path`` (``what`` names the kind of config in the messages)."""
    import yaml

    path = pathlib.Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_CONFIG_FILE_BYTES:
            raise ConfigFileError(f"{path}: {size} bytes; a {what} is at most 1 MB")
        return yaml.safe_load(path.read_bytes().decode("utf-8"))
    except OSError as error:
        raise ConfigFileError(f"{path}: cannot read: {error.strerror}") from None
    except UnicodeDecodeError as error:
        raise ConfigFileError(f"{path}: not UTF-8 text (byte {error.start})") from None
    except yaml.YAMLError as error:
        raise ConfigFileError(f"{path}: not valid YAML: {' '.join(str(error).split())}") from None
    except RecursionError:
        raise ConfigFileError(f"{path}: nested too deeply to be a {what}") from None
