"""The ``alerting:`` configuration section: validation and the ``alerts:`` simple case."""

from __future__ import annotations

import pytest
from vigil.flows.alerting_wiring import alerting_of, make_engine, make_route, state_dir
from vigil.flows.config import parse_config
from vigil.flows.errors import ConfigError

FULL = {
    "alerting": {
        "timing": {"for": "1m", "keep_firing_for": "10m", "group_wait": "10s"},
        "receivers": [
            {
                "name": "soc",
                "language": "vi",
                "webhook": {"url": "https://soc.example/hook", "secret_env": "SOC_SECRET"},
            },
            {"name": "pager", "pagerduty": {"routing_key_env": "PD_KEY"}},
            {"name": "chat", "slack": {"url_env": "SLACK_URL", "channel": "#ioc"}},
        ],
        "route": {
            "receiver": "soc",
            "group_by": ["alertname", "feed"],
            "routes": [
                {"matchers": ['severity=~"high|critical"'], "receiver": "pager", "continue": True},
                {
                    "matchers": ["feed=service_queues"],
                    "receiver": "chat",
                    "group_by": ["agency"],
                    "mute_windows": ["weekend"],
                },
            ],
        },
        "inhibit_rules": [
            {
                "source_matchers": ["severity=critical"],
                "target_matchers": ["severity=warning"],
                "equal": ["entity"],
            }
        ],
        "maintenance_windows": [
            {
                "name": "weekend",
                "weekdays": ["sat", "sun"],
                "start": "22:00",
                "end": "06:00",
                "timezone": "Asia/Ho_Chi_Minh",
            }
        ],
        "silences": [
            {
                "matchers": ["entity=10.0.0.1"],
                "starts_at": "2024-06-01T00:00:00+07:00",
                "ends_at": "2024-06-02T00:00:00+07:00",
                "comment": "scanner test",
            }
        ],
    }
}


def test_full_example_builds_an_engine() -> None:
    cfg = parse_config(FULL)
    eng = make_engine(alerting_of(cfg))
    assert eng.for_s == 60 and eng.keep_firing_for_s == 600
    route = make_route(alerting_of(cfg))
    assert route.group_wait == 10 and route.routes[0].continue_
    assert [r.receiver for r in route.match({"severity": "high", "feed": "service_queues"})] == [
        "pager",
        "chat",
    ]
    assert eng.receivers["soc"].language == "vi"


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        (
            {"receivers": [{"name": "x", "webhook": {"url": "u", "secret": "s"}}]},
            "alerting.receivers.0.webhook.secret",
        ),  # secrets are never inline
        (
            {"receivers": [{"name": "x", "webhook": {"url": "u", "secret_env": "not a name"}}]},
            "secret_env must name an environment variable",
        ),
        ({"route": {"receiver": "nobody"}}, "not in alerting.receivers"),
        ({"route": {"receiver": "null", "matchers": ["no operator here"]}}, "not a matcher"),
        ({"timing": {"keep_firing_for": "5 minutes"}}, "not a duration"),
        ({"state": {"redis_url": "redis://:pw@host:6379/0"}}, "must not carry credentials"),
        ({"maintenance_windows": [{"name": "w", "timezone": "Mars/Olympus"}]}, "unknown time zone"),
    ],
)
def test_invalid(patch: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_config({"alerting": patch})


def test_alerts_webhook_is_the_simple_case() -> None:
    cfg = parse_config(
        {"alerts": {"file": "out/a.jsonl", "webhook": {"url": "http://127.0.0.1:1/h"}}}
    )
    a = alerting_of(cfg)
    assert a.route is not None and a.route.receiver == "default"
    (default,) = [r for r in a.receivers if r.name == "default"]
    assert default.webhook is not None and default.webhook.url == "http://127.0.0.1:1/h"
    assert str(state_dir(cfg)) == "out/alerting"
    assert alerting_of(parse_config({})).route.receiver == "null"  # type: ignore[union-attr]


def test_missing_required_secret_fails_before_the_flow(tmp_path) -> None:
    from vigil.flows.alerting_wiring import make_alerting_sink

    cfg = parse_config({**FULL, "alerts": {"file": str(tmp_path / "a.jsonl")}})
    with pytest.raises(ConfigError, match="PD_KEY"):
        make_alerting_sink(cfg, environ={"SLACK_URL": "http://x", "SOC_SECRET": "s"})
    # A webhook receiver whose secret is unset is refused too: never unsigned by accident.
    with pytest.raises(ConfigError, match=r"\$SOC_SECRET is not set.*insecure_unsigned"):
        make_alerting_sink(cfg, environ={"SLACK_URL": "http://x", "PD_KEY": "k"})
