"""Settings read from a TOML file, the environment and keyword arguments, for every marketplace service.

The gateway (``PROXIMA_GATEWAY_*``), the verifier (``PROXIMA_VERIFY_*``) and the embedded client
(``PROXIMA_CLIENT_*``) load their pydantic-settings classes the same way: :func:`load_settings_file` reads the
TOML file, makes the given path fields relative to the file's folder, and builds the class while
:func:`file_values_source` (called from the class's ``settings_customise_sources``) hands it the file's values
below the keyword arguments and the environment. Every problem becomes one line of a :class:`SettingsError`.
Their command-line programs share :func:`load_from_args` (``--config``, ``--host``, ``--port``,
``--data-dir``) and :func:`wei_argument` (amount options).
"""

from __future__ import annotations

import argparse
import re
import tomllib
from collections.abc import Callable, Iterable, Sequence
from contextvars import ContextVar
from pathlib import Path
from typing import Any, ClassVar, Self, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, InitSettingsSource
from pydantic_settings import SettingsError as PydanticSettingsError

from proxima.marketplace.errors import MarketConfigError
from proxima.sdk.units import parse_wei

__all__ = [
    "NOT_FOUND",
    "KeySection",
    "SettingsError",
    "describe_errors",
    "file_values_source",
    "load_from_args",
    "load_settings_file",
    "read_toml",
    "resolve_paths",
    "wei_argument",
]

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")


class KeySection(BaseModel):
    """A service's signing key: ``keystore`` (production) or ``dev_account_index`` (development chains, with
    ``dev_mode = true``: those keys are public), exactly one of them.

    Subclasses set ``section`` (the settings section's name, for messages) and the default of
    ``passphrase_env``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    section: ClassVar[str] = "key"

    keystore: Path | None = None
    passphrase_env: str
    dev_account_index: int | None = Field(default=None, ge=0, le=999)

    @field_validator("passphrase_env")
    @classmethod
    def _check_env_name(cls, value: str) -> str:
        if not _ENV_NAME.match(value):
            raise ValueError(f"{value!r} is not an environment variable name")
        return value

    @model_validator(mode="after")
    def _one_key(self) -> Self:
        if (self.keystore is None) == (self.dev_account_index is None):
            raise ValueError(
                f"give {self.section}.keystore (an encrypted keystore file) or, on a development chain, "
                f"{self.section}.dev_account_index (exactly one of them)"
            )
        return self


NOT_FOUND = "file not found (give --config an existing TOML file)"
"""The problem reported for a configuration file that does not exist (services started by a CLI)."""

_S = TypeVar("_S", bound=BaseSettings)
_T = TypeVar("_T")

_ARG_OVERRIDES = ("host", "port", "data_dir")

_FILE_VALUES: ContextVar[dict[str, Any] | None] = ContextVar("_FILE_VALUES", default=None)


class SettingsError(MarketConfigError):
    """The settings are invalid; one line per problem, each naming the field.

    Args:
        problems: One line per problem, ``<dotted.field>: <what is wrong>``.
        source: The configuration file, if one was read.
    """

    def __init__(self, problems: list[str], source: Path | None = None) -> None:
        self.problems = problems
        self.source = source
        prefix = f"{source}: " if source is not None else ""
        super().__init__("\n".join(f"{prefix}{problem}" for problem in problems))


def read_toml(config: Path, *, not_found: str = NOT_FOUND) -> dict[str, Any]:
    """The values of a TOML file.

    Args:
        config: The file.
        not_found: The problem reported when the file does not exist.

    Returns:
        Its top-level table.

    Raises:
        SettingsError: If the file is missing, unreadable or not TOML.
    """
    try:
        return tomllib.loads(config.read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        raise SettingsError([not_found], config) from err
    except (OSError, UnicodeDecodeError) as err:
        raise SettingsError([f"cannot read it ({err})"], config) from err
    except tomllib.TOMLDecodeError as err:
        raise SettingsError([f"not valid TOML: {err}"], config) from err


def resolve_paths(values: dict[str, Any], base: Path, path_fields: Iterable[Sequence[str]]) -> dict[str, Any]:
    """A copy of ``values`` in which the given path fields, where relative, are relative to ``base``.

    Args:
        values: Values read from a file (not changed).
        base: The folder relative paths start from (the file's).
        path_fields: Each field as its names from the top, ``("chain", "deployment")``; fields that are
            absent, empty or not strings are left as they are (validation reports them).

    Returns:
        The values with those paths made absolute (``~`` expanded).
    """
    resolved = dict(values)
    for path in path_fields:
        section: Any = resolved
        for part in path[:-1]:
            inner = section.get(part) if isinstance(section, dict) else None
            if not isinstance(inner, dict):
                section = None
                break
            inner = dict(inner)
            section[part] = inner
            section = inner
        if not isinstance(section, dict):
            continue
        value = section.get(path[-1])
        if isinstance(value, str) and value:
            candidate = Path(value).expanduser()
            section[path[-1]] = str(candidate if candidate.is_absolute() else base / candidate)
    return resolved


def file_values_source(settings_cls: type[BaseSettings]) -> InitSettingsSource:
    """The source of the values :func:`load_settings_file` read, for ``settings_customise_sources``.

    Args:
        settings_cls: The settings class being built.

    Returns:
        A source with the file's values (none when the class is built without :func:`load_settings_file`).
    """
    return InitSettingsSource(settings_cls, init_kwargs=_FILE_VALUES.get() or {})


def load_settings_file(
    settings_cls: type[_S],
    config: Path | None,
    overrides: dict[str, Any],
    *,
    path_fields: Iterable[Sequence[str]],
    env_prefix: str,
    not_found: str = NOT_FOUND,
) -> _S:
    """Build ``settings_cls`` from a TOML file (optional), the environment and ``overrides``.

    The class must take the file's values from :func:`file_values_source` in its
    ``settings_customise_sources``.

    Args:
        settings_cls: The pydantic-settings class.
        config: A TOML file; the ``path_fields`` inside it are relative to its folder.
        overrides: Field values that win over everything else.
        path_fields: The path fields, as for :func:`resolve_paths`.
        env_prefix: The prefix of the environment variables named in error lines.
        not_found: The problem reported when the file does not exist.

    Returns:
        The validated settings.

    Raises:
        SettingsError: If the file is missing, unreadable or not TOML, or a value is invalid; one line per
            problem naming the field and the environment variable that sets it.
    """
    values: dict[str, Any] = {}
    if config is not None:
        config = Path(config)
        values = resolve_paths(read_toml(config, not_found=not_found), config.absolute().parent, path_fields)
    token = _FILE_VALUES.set(values)
    try:
        return settings_cls(**overrides)
    except ValidationError as err:
        raise SettingsError(describe_errors(err, env_prefix), config) from err
    except PydanticSettingsError as err:  # an environment value that is not valid JSON for a nested field
        raise SettingsError([str(err)], config) from err
    finally:
        _FILE_VALUES.reset(token)


def describe_errors(err: ValidationError, env_prefix: str) -> list[str]:
    """One readable line per validation error: ``dotted.field: problem (environment: VAR)``.

    Args:
        err: The validation error.
        env_prefix: The prefix of the environment variables (``PROXIMA_GATEWAY_``).

    Returns:
        The lines; unknown fields name no variable.
    """
    lines = []
    for e in err.errors(include_url=False):
        loc = [str(part) for part in e["loc"]]
        kind = e["type"]
        env_hint = True
        if kind == "extra_forbidden":
            problem = "unknown field (typo?)"
            env_hint = False
        elif kind == "missing":
            problem = "required field is missing"
        else:
            problem = str(e["msg"]).removeprefix("Value error, ")
            value = e.get("input")
            if not kind.startswith("value_error") and isinstance(value, str | int | float | bool):
                problem += f" (got {value!r})"
        if loc and env_hint:
            names = [p for p in loc if not p.isdigit()]
            env = env_prefix + "__".join(names).upper()
            lines.append(f"{'.'.join(loc)}: {problem} (environment: {env})")
        elif loc:
            lines.append(f"{'.'.join(loc)}: {problem}")
        else:
            lines.append(problem)
    return lines


def load_from_args(load: Callable[..., _T], args: argparse.Namespace, **extra: Any) -> _T:
    """Settings for a command: ``load(config, **overrides)`` with the file of ``--config`` and the options.

    Args:
        load: The service's ``load_settings``.
        args: Parsed options; ``config`` (may be empty), and ``host``, ``port``, ``data_dir`` where given
            (``None`` or absent: the settings decide).
        extra: Further overrides.

    Returns:
        What ``load`` returns.
    """
    overrides: dict[str, Any] = dict(extra)
    for name in _ARG_OVERRIDES:
        value = getattr(args, name, None)
        if value is not None:
            overrides[name] = value
    return load(Path(args.config) if args.config else None, **overrides)


def wei_argument(text: str) -> int:
    """An argparse ``type`` for amounts: wei (``1000``) or with a unit (``20 gwei``, ``0.5 ether``).

    Raises:
        argparse.ArgumentTypeError: If the text is not an amount of wei below 2**256.
    """
    try:
        value = parse_wei(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from err
    if not isinstance(value, int) or not 0 <= value < 2**256:
        raise argparse.ArgumentTypeError(f"{text!r} is not an amount of wei")
    return value
