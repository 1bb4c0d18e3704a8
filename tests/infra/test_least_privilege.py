"""Least privilege, checked on the synthesized templates: each role's statements evaluated against concrete ARNs.

IAM's matching, small: an action pattern covers an action (case-insensitive, `*` and `?`), a resource pattern covers
an ARN (`*` any run of characters, `/` included; `?` one character). A template's resources are rendered with a fixed
partition, region and account (`Fn::Join` of `Ref`s, as CDK writes the ARNs of resources addressed by name), so
`arn:aws:s3:::rtrec-models/models/production.json` is matched against what the statements really grant. A statement
that covers an action but names a resource this rendering cannot resolve fails the check instead of passing it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from typing import Any

import pytest

from infra_cdk.stacks.common import MODEL_KEYS
from infra_cdk.stacks.streaming import COUNTERFACTUAL_KINDS
from infra_cdk.stacks.training import JOB_OUTPUT_PREFIX
from rtrec.resources import COUNTERFACTUAL_BUCKET, ITEM_FEATURES, MODELS_BUCKET, TABLES, USER_FEATURES, ResourceNames

NAMES = ResourceNames()
PSEUDO = {
    "AWS::Partition": "aws",
    "AWS::Region": "eu-west-1",
    "AWS::AccountId": "123456789012",
    "AWS::URLSuffix": "amazonaws.com",
}
UNRESOLVED = "<unresolved>"


def render(value: Any) -> str:
    """A CloudFormation string value with the pseudo parameters filled in; anything else marks itself unresolved."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and value.get("Ref") in PSEUDO:
        return PSEUDO[value["Ref"]]
    if isinstance(value, dict) and "Fn::Join" in value:
        separator, parts = value["Fn::Join"]
        return separator.join(render(part) for part in parts)
    return UNRESOLVED


@cache
def _pattern(pattern: str, ignore_case: bool) -> re.Pattern[str]:
    body = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.compile(body, re.DOTALL | (re.IGNORECASE if ignore_case else 0))


def covers(pattern: str, value: str, *, ignore_case: bool = False) -> bool:
    """IAM wildcard matching: does `pattern` (an action or resource of a statement) cover `value`?"""
    return _pattern(pattern, ignore_case).fullmatch(value) is not None


def test_the_matcher_follows_iams_wildcards():
    assert covers("s3:Put*", "s3:PutObject", ignore_case=True)
    assert covers("S3:*", "s3:PutObject", ignore_case=True)
    assert covers("*", "dynamodb:DeleteItem", ignore_case=True)
    assert not covers("s3:PutObjectTagging", "s3:PutObject", ignore_case=True)
    assert covers("arn:aws:s3:::b/*", "arn:aws:s3:::b/models/production.json")
    assert covers("arn:aws:s3:::b/models/*.json", "arn:aws:s3:::b/models/production.json")
    assert covers("arn:aws:s3:::b/models/producti?n.json", "arn:aws:s3:::b/models/production.json")
    assert not covers("arn:aws:s3:::b/models/versions/*", "arn:aws:s3:::b/models/production.json")
    assert not covers("arn:aws:s3:::b", "arn:aws:s3:::b/x")
    assert not covers("arn:aws:s3:::b.x/*", "arn:aws:s3:::bax/y")
    join = {"Fn::Join": ["", ["arn:", {"Ref": "AWS::Partition"}, ":s3:::b/*"]]}
    assert render(join) == "arn:aws:s3:::b/*"
    assert render({"Fn::GetAtt": ["X", "Arn"]}) == UNRESOLVED


def s3_object(bucket_spec, key: str) -> str:
    return f"arn:aws:s3:::{NAMES.bucket(bucket_spec)}/{key}"


def table_arn(spec) -> str:
    return f"arn:aws:dynamodb:eu-west-1:123456789012:table/{NAMES.table(spec)}"


POINTERS = [s3_object(MODELS_BUCKET, key) for key in MODEL_KEYS.pointers.values()]
TABLE_ARNS = [table_arn(spec) for spec in TABLES]
# Every action that deletes a DynamoDB item: BatchWriteItem's DeleteRequest and PartiQL's DELETE need no DeleteItem.
ITEM_DELETES = ["dynamodb:DeleteItem", "dynamodb:BatchWriteItem", "dynamodb:PartiQLDelete", "dynamodb:DeleteTable"]
# Every action that replaces or removes an object.
OBJECT_WRITES = ["s3:PutObject", "s3:DeleteObject", "s3:DeleteObjectVersion", "s3:RestoreObject"]


@dataclass(frozen=True)
class Grants:
    """The Allow statements of one role, from every policy of the app attached to it."""

    role: str
    statements: tuple[dict[str, Any], ...]

    def granting(self, action: str) -> Iterator[tuple[dict[str, Any], list[str]]]:
        """Each statement whose actions cover `action`, with its resources rendered."""
        for statement in self.statements:
            assert "NotAction" not in statement, (self.role, statement)
            assert "NotResource" not in statement, (self.role, statement)
            if any(covers(a, action, ignore_case=True) for a in _as_list(statement["Action"])):
                yield statement, [render(r) for r in _as_list(statement["Resource"])]

    def allows(self, action: str, arn: str) -> bool:
        for statement, resources in self.granting(action):
            assert UNRESOLVED not in resources, (self.role, action, statement)  # could hide a grant
            if any(covers(r, arn) for r in resources):
                return True
        return False


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def grants_of(synth, stack: str, role) -> Grants:
    """Every statement of every policy that attaches to `role` (a CDK Role of `stack`), in any stack: by Ref in its
    own stack, or by its physical name (a role another stack addresses by name)."""
    import aws_cdk as cdk

    logical_id = cdk.Stack.of(role).get_logical_id(role.node.default_child)
    role_resource = synth.template(stack)["Resources"][logical_id]
    assert role_resource["Type"] == "AWS::IAM::Role"
    assert not role_resource["Properties"].get("ManagedPolicyArns"), logical_id
    name = role_resource["Properties"].get("RoleName")
    statements = [s for p in role_resource["Properties"].get("Policies", []) for s in p["PolicyDocument"]["Statement"]]
    for other, _, resource in synth.all_resources():
        if resource["Type"] not in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy"):
            continue
        attached = resource["Properties"].get("Roles", [])
        if (other == stack and {"Ref": logical_id} in attached) or (name is not None and name in attached):
            statements += resource["Properties"]["PolicyDocument"]["Statement"]
    assert statements, logical_id
    assert all(s["Effect"] == "Allow" for s in statements), logical_id
    return Grants(logical_id, tuple(statements))


@pytest.fixture(scope="module")
def api(synth) -> Grants:
    return grants_of(synth, "Serving", synth.stacks.serving.api_function.role)


@pytest.fixture(scope="module")
def training(synth) -> Grants:
    return grants_of(synth, "Training", synth.stacks.training.execution_role)


@pytest.fixture(scope="module")
def consumer(synth) -> Grants:
    return grants_of(synth, "Streaming", synth.stacks.streaming.consumer.role)


@pytest.fixture(scope="module")
def drift(synth) -> Grants:
    return grants_of(synth, "Drift", synth.stacks.drift.drift_function.role)


# -- the API ---------------------------------------------------------------------------------------------------------


def test_the_api_cannot_delete_items_or_anything_else_in_dynamodb(api):
    for table in TABLE_ARNS:
        for action in ITEM_DELETES:
            assert not api.allows(action, table), (action, table)
    for statement, _ in api.granting("dynamodb:GetItem"):  # no action wildcard that would cover a delete later
        assert all("*" not in a for a in _as_list(statement["Action"]) if a.lower().startswith("dynamodb")), statement


def test_the_api_reads_profiles_and_writes_items_with_the_calls_it_makes(api):
    items, users = table_arn(ITEM_FEATURES), table_arn(USER_FEATURES)
    assert all(api.allows(f"dynamodb:{a}", items) for a in ("BatchGetItem", "PutItem"))
    assert not api.allows("dynamodb:UpdateItem", items)  # not a call the API makes
    assert all(api.allows(f"dynamodb:{a}", users) for a in ("GetItem", "DescribeTable"))
    assert not any(api.allows(f"dynamodb:{a}", users) for a in ("PutItem", "UpdateItem", "BatchWriteItem", "Scan"))
    assert not api.allows("dynamodb:Scan", items)
    assert not api.allows("dynamodb:Query", items)


def test_the_api_reads_only_what_serving_reads_and_writes_only_catalog_additions(api):
    for key in (
        *MODEL_KEYS.pointers.values(),
        f"{MODEL_KEYS.versions}7/model.onnx",
        "popularity/current.json",
        "online/ranker/shardId-000000000000.json",
        "catalog/additions/item-1.json",
    ):
        assert api.allows("s3:GetObject", s3_object(MODELS_BUCKET, key)), key
    assert api.allows("s3:PutObject", s3_object(MODELS_BUCKET, "catalog/additions/item-1.json"))
    for key in ("drift/state.json", "mlflow/1/artifacts/model.onnx", "jobs/x/output/model.tar.gz"):
        assert not api.allows("s3:GetObject", s3_object(MODELS_BUCKET, key)), key
    for action in OBJECT_WRITES:
        for arn in (
            *POINTERS,
            s3_object(MODELS_BUCKET, f"{MODEL_KEYS.versions}7/model.onnx"),
            s3_object(MODELS_BUCKET, "online/ranker/shardId-000000000000.json"),
        ):
            assert not api.allows(action, arn), (action, arn)


# -- the pointers: only promotion writes them --------------------------------------------------------------------------


def test_training_cannot_write_the_production_or_shadow_pointer(training):
    for pointer in POINTERS:
        for action in OBJECT_WRITES:
            assert not training.allows(action, pointer), (action, pointer)


def test_training_writes_its_output_and_version_folders(training):
    """The other side of the denial: the job can still do its work (so the test above is not passing by accident)."""
    for key in (
        f"{JOB_OUTPUT_PREFIX}rtrec-retrain-1/output/model.tar.gz",
        f"{MODEL_KEYS.versions}7/model.onnx",
        "mlflow/1/abc/artifacts/model/model.onnx",
    ):
        assert training.allows("s3:PutObject", s3_object(MODELS_BUCKET, key)), key
    assert training.allows("s3:GetObject", s3_object(COUNTERFACTUAL_BUCKET, "events/dt=2026-01-01/b.jsonl"))
    for key in ("popularity/current.json", "online/ranker/s.json", "catalog/additions/i.json", "drift/state.json"):
        assert not training.allows("s3:PutObject", s3_object(MODELS_BUCKET, key)), key


def test_the_stream_consumer_cannot_write_the_pointers_or_models(consumer):
    for arn in (*POINTERS, s3_object(MODELS_BUCKET, f"{MODEL_KEYS.versions}7/model.onnx")):
        for action in OBJECT_WRITES:
            assert not consumer.allows(action, arn), (action, arn)
    assert consumer.allows("s3:PutObject", s3_object(MODELS_BUCKET, "online/ranker/shardId-000000000000.json"))
    assert not consumer.allows("dynamodb:BatchWriteItem", table_arn(ITEM_FEATURES))  # items are not its to write
    assert not any(consumer.allows(a, t) for a in ("dynamodb:DeleteItem", "dynamodb:Scan") for t in TABLE_ARNS)


def test_no_role_of_the_app_can_write_a_pointer(synth):
    """Promotion (`rtrec promote`, an operator's credentials) is the one writer of production and shadow."""
    roles = [(stack, lid) for stack, lid, r in synth.all_resources() if r["Type"] == "AWS::IAM::Role"]
    assert len(roles) >= 6
    for stack, _, resource in synth.all_resources():
        if resource["Type"] not in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy", "AWS::IAM::Role"):
            continue
        props = resource["Properties"]
        documents = (
            [props["PolicyDocument"]] if "PolicyDocument" in props else [p["PolicyDocument"] for p in props.get("Policies", [])]
        )
        grants = Grants(stack, tuple(s for d in documents for s in d["Statement"]))
        for pointer in POINTERS:
            for action in OBJECT_WRITES:
                assert not grants.allows(action, pointer), (stack, resource, action, pointer)


def test_the_drift_check_writes_only_its_state_and_reports(drift):
    assert drift.allows("s3:PutObject", s3_object(MODELS_BUCKET, "drift/reports/2026-01-01T00-00-00-000001.json"))
    assert drift.allows("s3:GetObject", s3_object(MODELS_BUCKET, MODEL_KEYS.production))
    for arn in (*POINTERS, s3_object(MODELS_BUCKET, f"{MODEL_KEYS.versions}7/x"), s3_object(MODELS_BUCKET, "x")):
        assert not drift.allows("s3:PutObject", arn), arn
    locks = [t for t in TABLE_ARNS if t.endswith("-locks")]
    assert drift.allows("dynamodb:PutItem", locks[0])
    assert not drift.allows("dynamodb:DeleteItem", locks[0])


# -- the keys the code writes are the keys the roles may write ------------------------------------------------------


class RecordingS3:
    def __init__(self) -> None:
        self.keys: list[str] = []

    def put_object(self, *, Bucket: str, Key: str, **_: Any) -> dict[str, str]:
        self.keys.append(Key)
        return {"ETag": '"e"'}


def test_the_consumers_counterfactual_keys_are_under_its_granted_prefixes(consumer):
    """S3CounterfactualLog's own keys (an impression, an event, a joined slate) against the consumer's grant."""
    from rtrec.adapters.aws.s3 import S3CounterfactualLog
    from rtrec.domain.events import Impression, UserEvent
    from rtrec.domain.online import LabeledImpression

    client = RecordingS3()
    log = S3CounterfactualLog(NAMES.bucket(COUNTERFACTUAL_BUCKET), client=client)
    slate = Impression(
        request_id="r1",
        user_id="u1",
        model_version="7",
        strategy="model",
        items=("i1",),
        propensities=(1.0,),
        scores=(0.5,),
        timestamp=1.7e9,
    )
    log.write_batch("b1", [slate, UserEvent(event_id="e1", user_id="u1", item_id="i1", type="click", timestamp=1.7e9)])
    log.write_joined("b1", [LabeledImpression(slate, (1,), 1.7e9)])
    assert {k.split("/", 1)[0] for k in client.keys} == set(COUNTERFACTUAL_KINDS)
    for key in client.keys:
        assert consumer.allows("s3:PutObject", s3_object(COUNTERFACTUAL_BUCKET, key)), key


def test_the_retraining_jobs_output_path_is_the_granted_prefix():
    """The drift check starts jobs with `s3://<models>/jobs/` as their output path; the role may write there."""
    from functions.drift_check.app import build_handler
    from rtrec.settings import DriftSettings

    settings = DriftSettings(
        endpoint_url="http://localhost:45997",
        resource_prefix="lp",
        sagemaker_role_arn="arn:aws:iam::1:role/train",
        sagemaker_image_uri="image",
    )
    monitor = build_handler(settings).monitor  # builds the SageMaker jobs, calls nothing
    jobs = monitor._trigger._jobs  # type: ignore[union-attr]  # a trigger: the settings name a backend
    assert jobs.config.output_s3_uri == f"s3://{settings.names.bucket(MODELS_BUCKET)}/{JOB_OUTPUT_PREFIX}"
