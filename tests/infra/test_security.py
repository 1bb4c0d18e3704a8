"""Least privilege: cdk-nag's AwsSolutions checks pass with every acknowledgment justified, and no IAM policy holds
a wildcard that is not one of the few AWS leaves no other way to write."""

from __future__ import annotations

import json

import pytest

# Actions that support no resource-level permissions: "*" is the only resource AWS accepts for them.
RESOURCE_STAR_ACTIONS = {
    "xray:PutTraceSegments",
    "xray:PutTelemetryRecords",
    "ecr:GetAuthorizationToken",
    "cloudwatch:PutMetricData",
    "sagemaker:ListTrainingJobs",
}
# Action wildcards, each acknowledged in place with its reason: CDK's S3 grant action groups and the MLflow API
# on the one tracking server.
ALLOWED_ACTION_WILDCARDS = {"s3:GetObject*", "s3:GetBucket*", "s3:List*", "s3:Abort*", "s3:DeleteObject*", "sagemaker-mlflow:*"}


def test_cdk_nag_finds_nothing_unacknowledged(synth):
    assert synth.error is None, synth.error[:4000]


def test_every_acknowledgment_names_its_rule_and_a_reason(synth):
    acknowledged = [
        (stack, logical_id, rule)
        for stack, logical_id, resource in synth.all_resources()
        for rule in resource.get("Metadata", {}).get("cdk_nag", {}).get("rules_to_suppress", [])
    ]
    assert len(acknowledged) >= 20  # the wildcard findings are acknowledged one by one
    for stack, logical_id, rule in acknowledged:
        assert rule["id"].startswith("AwsSolutions-"), (stack, logical_id, rule)
        assert len(rule["reason"]) >= 60, (stack, logical_id, rule)  # a reason, not a shrug
    rules = {r["id"].split("[")[0] for _, _, r in acknowledged}
    assert rules <= {
        "AwsSolutions-IAM4",
        "AwsSolutions-IAM5",
        "AwsSolutions-L1",
        "AwsSolutions-S1",
        "AwsSolutions-SQS3",
        "AwsSolutions-APIG2",
        "AwsSolutions-APIG3",
        "AwsSolutions-APIG4",
        "AwsSolutions-COG4",
        "AwsSolutions-OS1",
        "AwsSolutions-OS3",
    }, rules


def test_cdk_nag_fails_synth_on_a_finding_nobody_acknowledged(tmp_path):
    """The same registration as the app's (build_stacks -> add_nag_checks): an unencrypted, unlogged bucket fails."""
    import aws_cdk as cdk
    from aws_cdk import aws_s3 as s3

    from infra_cdk.stacks import add_nag_checks

    app = cdk.App(outdir=str(tmp_path))
    stack = cdk.Stack(app, "Bad")
    s3.Bucket(stack, "Open")
    add_nag_checks(app)
    with pytest.raises(RuntimeError, match="ValidationFailed"):
        app.synth()
    assert "AwsSolutions-S1" in (tmp_path / "validation-report.json").read_text()


def _statements(synth):
    for stack, logical_id, resource in synth.all_resources():
        props = resource.get("Properties", {})
        documents = []
        if resource["Type"] in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy"):
            documents.append(props["PolicyDocument"])
        if resource["Type"] == "AWS::IAM::Role":
            documents += [p["PolicyDocument"] for p in props.get("Policies", [])]
        for document in documents:
            for statement in document["Statement"]:
                yield stack, logical_id, statement


def _as_list(value):
    return value if isinstance(value, list) else [value]


def test_no_iam_wildcard_beyond_the_justified_ones(synth):
    statements = list(_statements(synth))
    assert len(statements) > 20
    for stack, logical_id, statement in statements:
        assert statement["Effect"] == "Allow"
        actions = _as_list(statement["Action"])
        for action in actions:
            assert action != "*", (stack, logical_id, action)
            assert ("*" not in action) or action in ALLOWED_ACTION_WILDCARDS, (stack, logical_id, action)
        if "*" in _as_list(statement["Resource"]):
            assert set(actions) <= RESOURCE_STAR_ACTIONS, (stack, logical_id, actions)
            if "cloudwatch:PutMetricData" in actions:
                assert statement["Condition"]["StringEquals"]["cloudwatch:namespace"] == "rtrec"


def test_roles_carry_no_managed_policy_but_api_gateways_logging_role(synth):
    managed = {
        (stack, logical_id): json.dumps(r["Properties"]["ManagedPolicyArns"])
        for stack, logical_id, r in synth.all_resources()
        if r["Type"] == "AWS::IAM::Role" and r["Properties"].get("ManagedPolicyArns")
    }
    assert len(managed) == 1, managed
    assert "AmazonAPIGatewayPushToCloudWatchLogs" in next(iter(managed.values())), managed


def test_s3_writes_are_limited_to_each_handlers_prefix(synth):
    """The consumer writes the ranker state, the API catalog additions, the drift check its state and reports, the
    training job its output, version folders and MLflow artifacts: only there (the MLflow server role: mlflow/)."""
    expected = {
        "Streaming": ("online/ranker/",),
        "Serving": ("catalog/additions/",),
        "Drift": ("drift/reports/", "drift/state.json"),
        "Training": ("jobs/", "models/versions/", "mlflow/"),
    }
    for stack, prefixes in expected.items():
        writes = [
            r
            for st, _, s in _statements(synth)
            if st == stack and any(a in ("s3:PutObject", "s3:Put*", "s3:*", "*") for a in _as_list(s["Action"]))
            for r in _as_list(s["Resource"])
        ]
        keys = [json.dumps(w).split(":s3:::rtrec-models", 1)[1] for w in writes if "rtrec-models" in json.dumps(w)]
        models = [k for k in keys if k.startswith("/")]  # object keys (a merged statement may name the bucket too)
        assert models, (stack, models)
        assert all(any(m.startswith(f"/{p}") for p in prefixes) for m in models), (stack, models)


def test_no_s3_or_dynamodb_grant_uses_cdks_broad_action_groups_but_the_mlflow_servers(synth):
    """Explicit actions (s3:GetObject, dynamodb:PutItem, ...): no DeleteItem, Scan or object-wide action group that
    a handler does not call. The MLflow tracking server's artifact store keeps CDK's read/write grant on mlflow/."""
    for stack, logical_id, statement in _statements(synth):
        actions = _as_list(statement["Action"])
        if logical_id.startswith("MlflowServerRole"):
            continue
        assert not [a for a in actions if a.startswith("s3:") and "*" in a], (stack, logical_id, actions)
        assert "dynamodb:DeleteItem" not in actions, (stack, logical_id, actions)
        assert "dynamodb:Scan" not in actions, (stack, logical_id, actions)
