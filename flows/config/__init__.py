"""Vigil's one configuration schema, and how to load and explain it.

The schema is one tree: a section per registered feed (its model lives in the feed's package,
``flows/<feed>/config.py``; see :mod:`vigil.flows.feed`) and the shared sections defined
here or in this package (``alerting``, ``metrics``, ``alerts``, ``dead_letters``).
:class:`VigilConfig` is assembled from the registry the first time it is used, so that a
feed's package can import ``vigil.flows.config.base`` without importing the other feeds.
Every model is frozen and rejects unknown keys, so a typo such as ``failurs:`` fails at
startup with its path (``security.rules.brute_force.failurs``). Secrets never live in the
file: a field ending in ``_env`` names an environment variable that holds the secret.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from pydantic import Field, ValidationError, create_model, model_validator
from vigil.flows.config.alerting import AlertingConfig
from vigil.flows.config.base import Frozen
from vigil.flows.errors import ConfigError


# ---------------------------------------------------------------- outputs
class MetricsConfig(Frozen):
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(default=9464, ge=0, le=65535)


class WebhookConfig(Frozen):
    url: str
    secret_env: str | None = Field(
        default="VIGIL_WEBHOOK_SECRET",
        description="environment variable holding the HMAC secret",
    )
    timeout_s: float = Field(default=5.0, gt=0)
    max_attempts: int = Field(default=5, ge=1)
    insecure_unsigned: bool = Field(
        default=False,
        description="send unsigned when the secret variable is unset (logged as a warning)",
    )


class AlertsConfig(Frozen):
    file: str | None = Field(default="vigil-out/alerts.jsonl", description='"-" = stdout')
    webhook: WebhookConfig | None = None


class DeadLetterConfig(Frozen):
    file: str | None = "vigil-out/dead_letters.jsonl"


class SharedConfig(Frozen):
    """The sections every run has, whatever feeds it runs."""

    alerting: AlertingConfig = AlertingConfig()
    metrics: MetricsConfig = MetricsConfig()
    alerts: AlertsConfig = AlertsConfig()
    dead_letters: DeadLetterConfig = DeadLetterConfig()

    @model_validator(mode="after")
    def _secrets_not_inline(self) -> SharedConfig:
        wh = self.alerts.webhook
        if wh is not None and wh.secret_env is not None and not wh.secret_env.isidentifier():
            msg = (
                "alerts.webhook.secret_env must name an environment variable, "
                f"got {wh.secret_env!r}"
            )
            raise ValueError(msg)
        return self

    if TYPE_CHECKING:
        # The feeds' sections (``cfg.security`` ...) are added from the registry.
        def __getattr__(self, name: str) -> Any: ...


@functools.cache
def _vigil_config() -> type[SharedConfig]:
    from vigil.flows.feed import feeds

    sections: dict[str, Any] = {
        f.name: (f.config, Field(default_factory=f.config)) for f in feeds()
    }
    model = create_model(  # type: ignore[call-overload]
        "VigilConfig",
        __base__=SharedConfig,
        __module__=__name__,
        __doc__="The whole configuration file: one section per feed, then the shared ones.",
        **sections,
    )
    return model  # type: ignore[no-any-return]


if TYPE_CHECKING:
    VigilConfig = SharedConfig
else:

    def __getattr__(name: str) -> Any:
        if name == "VigilConfig":
            return _vigil_config()
        msg = f"module {__name__!r} has no attribute {name!r}"
        raise AttributeError(msg)


def parse_config(data: Any) -> VigilConfig:
    """Validate already-loaded YAML data (``None`` means an empty file)."""
    return _vigil_config().model_validate(data or {})


def load_config(path: str | Path) -> VigilConfig:
    """Read and validate a YAML configuration file.

    Raises
    ------
    ConfigError
        With one line per problem, each naming the key's path.
    """
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except OSError as ex:
        msg = f"cannot read config {str(p)!r}: {ex.strerror}"
        raise ConfigError(msg) from ex
    except yaml.YAMLError as ex:
        msg = f"config {str(p)!r} is not valid YAML: {ex}"
        raise ConfigError(msg) from ex
    data = resolve_paths(data, p.resolve().parent)
    try:
        return parse_config(data)
    except ValidationError as ex:
        raise ConfigError(explain_errors(ex, str(p))) from ex


#: Keys whose values are files or folders: relative ones are taken from the config's folder.
PATH_KEYS = frozenset({"paths", "path", "model_path", "file", "dir"})


def resolve_paths(node: Any, base: Path) -> Any:
    """``node`` with every relative file path under :data:`PATH_KEYS` made absolute under
    ``base`` (the configuration file's folder), so a config means the same from any folder.
    ``-`` (stdout), URLs and ``~`` (the home folder) are left as they are."""

    def fix(v: Any) -> Any:
        if not isinstance(v, str) or v in ("", "-") or "://" in v:
            return v
        if v.startswith("~"):
            return str(Path(v).expanduser())
        return v if Path(v).is_absolute() else os.path.normpath(base / v)

    if isinstance(node, dict):
        out: dict[Any, Any] = {}
        for k, v in node.items():
            if k in PATH_KEYS and isinstance(v, list):
                out[k] = [fix(x) for x in v]
            elif k in PATH_KEYS and isinstance(v, str):
                out[k] = fix(v)
            else:
                out[k] = resolve_paths(v, base)
        return out
    if isinstance(node, list):
        return [resolve_paths(x, base) for x in node]
    return node


def explain_errors(ex: ValidationError, source: str) -> str:
    """One line per validation error: ``path: problem (got value)``."""
    lines = [f"{source}: {ex.error_count()} problem(s)"]
    for err in ex.errors():
        loc = ".".join(str(x) for x in err["loc"])
        if err["type"] == "extra_forbidden":
            lines.append(f"  {loc}: unknown key (misspelt?)")
        elif err["type"] == "missing":
            lines.append(f"  {loc}: required key is missing")
        elif err["type"] in ("union_tag_not_found", "union_tag_invalid"):
            ctx = err.get("ctx") or {}
            tag, kinds = ctx.get("discriminator", "kind"), ctx.get("expected_tags", "")
            key = f"{loc}.{str(tag).strip(chr(39))}"
            if "tag" in ctx:
                lines.append(f"  {key}: must be one of {kinds} (got {ctx['tag']!r})")
            else:
                lines.append(f"  {key}: required key is missing (which kind of input this is)")
        else:
            lines.append(f"  {loc}: {err['msg']} (got {err.get('input')!r})")
    return "\n".join(lines)


def webhook_secret(cfg: WebhookConfig, environ: dict[str, str] | None = None) -> bytes | None:
    """The webhook's HMAC secret, read from the environment variable the config names."""
    env = os.environ if environ is None else environ
    if cfg.secret_env is None:
        return None
    val = env.get(cfg.secret_env)
    return val.encode() if val else None
