"""Two kinds of failure, and what a process does with each.

* :class:`PermanentError`: retrying cannot help (schema missing, bad credentials, bad
  configuration, the embedded store held by another process). A long-running process stops
  with one line on stderr and exit code :data:`EXIT_PERMANENT`.
* :class:`TransientError`: the store or the broker is away for now. Long-running processes
  back off, retry and count it (``tokenledger_transient_errors_total``); a one-shot command
  prints one line and exits with :data:`EXIT_TRANSIENT` so a scheduler can run it again.
"""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import ParamSpec, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

EXIT_PERMANENT = 2
EXIT_TRANSIENT = 75  # sysexits EX_TEMPFAIL: try again later

P = ParamSpec("P")
log = logging.getLogger(__name__)


class PermanentError(Exception):
    """Retrying will not help; the message says what to fix."""


class TransientError(Exception):
    """Retrying later may help."""


class ConfigError(PermanentError, ValueError):
    """A setting, file or argument is wrong."""


def one_line(message: object) -> str:
    """The first line of an error's text (engine messages carry stack traces after it)."""
    text = str(message).strip()
    return text.splitlines()[0] if text else type(message).__name__


def cli_errors(prog: str) -> Callable[[Callable[P, int]], Callable[P, int]]:
    """Turn the expected failures of a command into one line on stderr and an exit code.

    Permanent errors (and ``ValueError``/``FileNotFoundError`` from bad arguments) exit 2,
    transient ones exit 75; anything else is a bug and keeps its traceback.
    """

    def wrap(main: Callable[P, int]) -> Callable[P, int]:
        @functools.wraps(main)
        def run(*args: P.args, **kwargs: P.kwargs) -> int:
            try:
                return main(*args, **kwargs)
            except TransientError as exc:
                print(f"{prog}: unavailable, try again later: {one_line(exc)}", file=sys.stderr)
                return EXIT_TRANSIENT
            except (PermanentError, ValueError, FileNotFoundError) as exc:
                print(f"{prog}: error: {one_line(exc)}", file=sys.stderr)
                return EXIT_PERMANENT
            except KeyboardInterrupt:
                return 130

        return run

    return wrap


M = TypeVar("M", bound=BaseModel)


def load_yaml_model(model: type[M], path: Path) -> M:
    """Read a YAML file into a pydantic model.

    Raises:
        ConfigError: Missing file, bad YAML, or invalid content: the path and the first problem.
    """
    try:
        return model.model_validate(yaml.safe_load(path.read_text()))
    except OSError as exc:
        raise ConfigError(f"{path}: {exc.strerror or exc}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {one_line(exc)}") from exc
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(x) for x in first["loc"]) or "(top level)"
        raise ConfigError(f"{path}: {where}: {first['msg']} ({exc.error_count()} problem(s))") from exc
