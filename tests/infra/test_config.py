"""The CDK app's settings from context: the per-key usage plans' limits (no synth)."""

from __future__ import annotations

import pytest

from infra_cdk.config import API_KEY_ROLES, InfraConfig


def test_each_key_has_its_own_limits_from_context():
    context = {"admin_key_rate_limit": "5", "admin_key_burst_limit": "8", "events_key_quota_per_day": "123"}
    config = InfraConfig.from_context(context.get)
    assert config.key_limits("admin") == (5.0, 8, InfraConfig().admin_key_quota_per_day)
    assert config.key_limits("events")[2] == 123
    assert config.key_limits("read") == InfraConfig().key_limits("read")
    assert API_KEY_ROLES == ("read", "events", "admin")


def test_the_replaced_ingest_keys_fail_with_their_replacements_named():
    with pytest.raises(ValueError, match="read_key_rate_limit / events_key_rate_limit / admin_key_rate_limit"):
        InfraConfig.from_context({"ingest_rate_limit": "50"}.get)


@pytest.mark.parametrize("field", ["read_key_rate_limit", "events_key_burst_limit", "admin_key_quota_per_day"])
def test_a_limit_must_be_positive(field):
    with pytest.raises(ValueError, match="must be positive"):
        InfraConfig.from_context({field: "0"}.get)
