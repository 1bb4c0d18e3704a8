from __future__ import annotations

import pytest
from pydantic import ValidationError

from rtrec.settings import ApiSettings, AwsSettings, LocalSettings


def test_defaults_target_aws_and_name_resources(monkeypatch):
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("RTREC_PREFIX", raising=False)
    settings = AwsSettings()
    assert settings.endpoint_url is None
    assert settings.target == "aws"
    assert settings.names.prefix == "rtrec"


def test_endpoint_from_environment_selects_local(monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://localhost:4566/")
    settings = AwsSettings()
    assert settings.endpoint_url == "http://localhost:4566"
    assert settings.target == "local"


def test_explicit_argument_beats_environment(monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://localhost:4566")
    monkeypatch.setenv("RTREC_DEFAULT_K", "20")
    settings = ApiSettings(endpoint_url="http://localhost:9999", default_k=5)
    assert settings.endpoint_url == "http://localhost:9999"
    assert settings.default_k == 5


@pytest.mark.parametrize(
    ("field", "value"),
    [("endpoint_url", "localhost:4566"), ("resource_prefix", "Bad Prefix"), ("default_k", 0), ("default_k", 101)],
)
def test_invalid_values_are_rejected_with_the_field_named(field, value):
    with pytest.raises(ValidationError) as excinfo:
        ApiSettings(**{field: value})
    assert field in str(excinfo.value)


def test_local_endpoint_uses_localhost_on_localstack_port(monkeypatch):
    monkeypatch.delenv("RTREC_CLOUD_PORT", raising=False)
    local = LocalSettings()
    assert local.cloud_port == 4566
    assert local.endpoint_url == "http://localhost:4566"
    assert (local.api_host, local.api_port) == ("127.0.0.1", 8000)


def test_settings_are_immutable():
    settings = AwsSettings(region="eu-west-1")
    with pytest.raises(ValidationError):
        settings.region = "us-east-1"  # type: ignore[misc]


def test_the_ranking_layer_defaults_to_serving_ranking_and_takes_each_setting(monkeypatch):
    from rtrec.domain.ranking import SERVING_RANKING

    for name in (
        "exploration_policy",
        "temperature",
        "epsilon",
        "popularity_weight",
        "freshness_weight",
        "new_item_boost",
        "promoted_share",
        "max_genre_share",
        "online_ranker_weight",
        "online_ranker_min_examples",
    ):
        monkeypatch.delenv(f"RTREC_{name.upper()}", raising=False)
    assert ApiSettings().ranking() == SERVING_RANKING
    assert SERVING_RANKING.promoted_share == 0.2
    monkeypatch.setenv("RTREC_EXPLORATION_POLICY", "greedy")
    monkeypatch.setenv("RTREC_ONLINE_RANKER_WEIGHT", "0.3")
    monkeypatch.setenv("RTREC_ONLINE_RANKER_MIN_EXAMPLES", "7")
    ranking = ApiSettings(
        promoted_share=0.0,
        max_genre_share=0.5,
        temperature=0.1,
        epsilon=0.2,
        popularity_weight=0.4,
        freshness_weight=0.5,
        new_item_boost=0.6,
    ).ranking()
    assert (ranking.policy, ranking.online_weight, ranking.online_min_examples) == ("greedy", 0.3, 7)
    assert (ranking.promoted_share, ranking.max_genre_share, ranking.temperature, ranking.epsilon) == (0.0, 0.5, 0.1, 0.2)
    assert (ranking.popularity_weight, ranking.freshness_weight, ranking.new_item_boost) == (0.4, 0.5, 0.6)
    assert ranking.freshness_half_life_days == SERVING_RANKING.freshness_half_life_days  # not a setting
