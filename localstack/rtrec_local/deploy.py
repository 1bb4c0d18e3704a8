"""`rtrec cloud deploy`: the CDK app (infra_cdk/) deployed with the CDK CLI to a local AWS endpoint.

The target is the embedded cloud (moto server) or LocalStack: `cdk bootstrap` (once per endpoint), then
`cdk deploy --method=direct` of the synthesized assembly, with dummy credentials and `AWS_ENDPOINT_URL`. The
assembly is the one AWS gets (same stacks, same default synthesizer, assets uploaded to the bootstrap bucket),
except for the search stack: moto's CloudFormation has no OpenSearch domain, so it is left out (`-c search=false`).

Measured against moto 5.2.5 (the report lists what each deployment skipped):
- `--method=direct` (CreateStack/UpdateStack): moto executes change sets in template order, not dependency order,
  and fails the REST API's deployment before its methods exist;
- the endpoint must be `http://localhost:PORT`: with 127.0.0.1 moto misreads the template URLs of the bucket;
- moto's CloudFormation ignores, and reports CREATE_COMPLETE for, the types it does not implement (bucket and
  queue policies, API Gateway stages, API keys and usage plans, CloudWatch alarms, SNS topic policies, the
  SageMaker MLflow server), and ignores properties it does not model (DynamoDB point-in-time recovery and TTL,
  encryption settings, a function's Layers). Lambda functions, layer versions and the event source mapping (batch
  size, bisect, retries, on-failure destination, ReportBatchItemFailures) are created; Lambda cannot run there (it
  needs Docker), which is why the embedded cloud runs the handlers in-process.

The physical names are those of `rtrec.resources` under the deployment's prefix. The embedded cloud has already
provisioned them under its own prefix (`rtrec`), and CloudFormation cannot adopt existing resources, so the default
prefix here is another one (`rtrec-cdk`): the deployed copy sits beside the provisioned one.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from rtrec.adapters.aws.clients import aws_client
from rtrec.errors import DependencyError, InvalidInputError
from rtrec.resources import BUCKETS, QUEUES, STREAMS, TABLES, ResourceNames

REPO_ROOT = Path(__file__).resolve().parents[2]
INFRA_DIR = REPO_ROOT / "infra_cdk"
DEFAULT_PREFIX = "rtrec-cdk"
BOOTSTRAP_VERSION_PARAMETER = "/cdk-bootstrap/hnb659fds/version"
# Stacks moto's CloudFormation cannot create at all (their one resource type is missing there).
NOT_ON_MOTO = {"search": "moto's CloudFormation has no AWS::OpenSearchService::Domain"}
# Credentials and profile variables that must not leak from the caller's shell into a local deployment.
_AWS_IDENTITY_VARIABLES = (
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_ROLE_ARN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
)


@dataclass
class StackOutcome:
    """One deployed stack: resource types created, and those the endpoint's CloudFormation skipped."""

    name: str
    created: Counter[str] = field(default_factory=Counter)
    skipped: Counter[str] = field(default_factory=Counter)


@dataclass
class DeployReport:
    endpoint_url: str
    prefix: str
    stacks: list[StackOutcome]
    left_out: dict[str, str]  # stack -> why it was not deployed
    bootstrapped: bool
    seconds: dict[str, float]

    def summary(self) -> list[str]:
        lines = []
        for stack in self.stacks:
            created = ", ".join(f"{n} {t.split('::', 1)[1]}" for t, n in sorted(stack.created.items()))
            lines.append(f"{stack.name}: created {created or 'nothing'}")
            if stack.skipped:
                skipped = ", ".join(f"{n} {t.split('::', 1)[1]}" for t, n in sorted(stack.skipped.items()))
                lines.append(f"{stack.name}: skipped by the endpoint's CloudFormation: {skipped}")
        lines += [f"{name}: not deployed ({why})" for name, why in self.left_out.items()]
        return lines


def local_endpoint(endpoint_url: str) -> str:
    """`http://localhost:PORT` for a loopback endpoint (moto misparses template URLs on 127.0.0.1)."""
    parsed = urlparse(endpoint_url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise InvalidInputError(f"not an endpoint URL: {endpoint_url!r}")
    if parsed.hostname == "127.0.0.1":
        return endpoint_url.replace("127.0.0.1", "localhost", 1).rstrip("/")
    return endpoint_url.rstrip("/")


def cdk_cli(infra_dir: Path = INFRA_DIR) -> Path:
    cli = infra_dir / "node_modules" / ".bin" / "cdk"
    if not cli.exists():
        raise DependencyError(f"the CDK CLI is not installed at {cli}: run `make infra-deps` (npm ci in infra_cdk/)")
    return cli


def cdk_environment(base_env: Mapping[str, str], endpoint_url: str | None, region: str) -> dict[str, str]:
    """The CDK CLI's environment: offline (no version check, notices or telemetry) and, with an endpoint, the local
    cloud with dummy credentials. `base_env` is the caller's environment (the CLI passes its own)."""
    env = dict(base_env)
    env.update(
        {
            "CDK_DISABLE_VERSION_CHECK": "1",
            "CDK_DISABLE_CLI_TELEMETRY": "true",
            "NODE_NO_WARNINGS": "1",
            "AWS_REGION": region,
            "AWS_DEFAULT_REGION": region,
        }
    )
    node_major = _node_major(env)
    if node_major:  # jsii warns about every Node release it no longer supports, on every synth
        env["JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION"] = node_major
        env["JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION"] = node_major
        env["JSII_SILENCE_WARNING_UNTESTED_NODE_VERSION"] = node_major
    if endpoint_url:
        for name in _AWS_IDENTITY_VARIABLES:
            env.pop(name, None)
        env.update({"AWS_ENDPOINT_URL": endpoint_url, "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test"})
    return env


def _node_major(env: Mapping[str, str]) -> str:
    node = shutil.which("node", path=env.get("PATH"))
    if node is None:
        return ""
    try:
        version = subprocess.run([node, "--version"], capture_output=True, text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return ""
    return version.strip().lstrip("v").split(".", 1)[0]


class CdkDeployer:
    """Synthesizes the CDK app and deploys it with the CDK CLI to a local endpoint."""

    def __init__(
        self,
        endpoint_url: str,
        *,
        base_env: Mapping[str, str],
        python: str,
        prefix: str = DEFAULT_PREFIX,
        region: str = "us-east-1",
        runtime_layer_dir: Path | None = None,
        core_layer_dir: Path | None = None,
        out_dir: Path | None = None,
        infra_dir: Path = INFRA_DIR,
        log: Callable[[str], None] = print,
        echo_cli: bool = True,
    ) -> None:
        self.endpoint_url = local_endpoint(endpoint_url)
        self.prefix = prefix
        self.region = region
        self.python = python
        self.infra_dir = infra_dir
        self.out_dir = Path(out_dir) if out_dir else infra_dir / "cdk.out" / f"local-{prefix}"
        self.runtime_layer_dir = runtime_layer_dir
        self.core_layer_dir = core_layer_dir
        self.env = cdk_environment(base_env, self.endpoint_url, region)
        self.log = log
        self.echo_cli = echo_cli
        self.cli = cdk_cli(infra_dir)

    def client(self, service: str) -> Any:
        return aws_client(service, self.endpoint_url, self.region)

    # -- steps ------------------------------------------------------------------------------------------------

    def context(self) -> dict[str, str]:
        context = {"prefix": self.prefix, "removal": "destroy", "search": "false"}
        if self.runtime_layer_dir is not None:
            context["runtime_layer_dir"] = str(Path(self.runtime_layer_dir).resolve())
        if self.core_layer_dir is not None:
            context["core_layer_dir"] = str(Path(self.core_layer_dir).resolve())
        return context

    def synth(self) -> Path:
        """`cdk synth` of the app into `out_dir` (the assembly that bootstrap and deploy then use)."""
        args = ["synth", "--quiet", "--output", str(self.out_dir), "--app", f"{self.python} app.py"]
        for key, value in self.context().items():
            args += ["--context", f"{key}={value}"]
        self._run(args)
        return self.out_dir

    def stack_names(self) -> list[str]:
        """The assembly's CloudFormation stack names, in deployment order (the manifest's dependencies)."""
        manifest = json.loads((self.out_dir / "manifest.json").read_text())
        stacks = {aid: a for aid, a in manifest["artifacts"].items() if a["type"] == "aws:cloudformation:stack"}
        order: list[str] = []

        def visit(aid: str) -> None:
            if aid in order or aid not in stacks:
                return
            for dep in stacks[aid].get("dependencies", []):
                visit(dep)
            order.append(aid)

        for aid in stacks:
            visit(aid)
        return [stacks[aid]["properties"].get("stackName", aid) for aid in order]

    def check_conflicts(self) -> None:
        """Fail before deploying when a physical name is taken by something no stack of this prefix owns."""
        cfn = self.client("cloudformation")
        existing_stacks = {s["StackName"] for s in cfn.list_stacks()["StackSummaries"] if s["StackStatus"] != "DELETE_COMPLETE"}
        if f"{self.prefix}-data" in existing_stacks:
            return  # an update of this prefix's own stacks
        names = ResourceNames(prefix=self.prefix)
        taken = set(self.client("dynamodb").list_tables().get("TableNames", []))
        taken |= set(self.client("kinesis").list_streams().get("StreamNames", []))
        taken |= {b["Name"] for b in self.client("s3").list_buckets().get("Buckets", [])}
        taken |= {u.rsplit("/", 1)[-1] for u in self.client("sqs").list_queues().get("QueueUrls", [])}
        wanted = (
            [names.table(t) for t in TABLES]
            + [names.stream(s) for s in STREAMS]
            + [names.bucket(b) for b in BUCKETS]
            + [names.queue(q) for q in QUEUES]
        )
        clash = sorted(set(wanted) & taken)
        if clash:
            raise InvalidInputError(
                f"{', '.join(clash)} already exist at {self.endpoint_url} outside CloudFormation (the embedded cloud "
                f"provisions its own prefix at start); deploy under another prefix: rtrec cloud deploy --prefix NAME"
            )

    def account(self) -> str:
        return str(self.client("sts").get_caller_identity()["Account"])

    def bootstrapped(self) -> bool:
        try:
            self.client("ssm").get_parameter(Name=BOOTSTRAP_VERSION_PARAMETER)
        except Exception as exc:  # ParameterNotFound (botocore's error class is per client)
            if "ParameterNotFound" in type(exc).__name__ or "ParameterNotFound" in str(exc):
                return False
            raise
        return True

    def bootstrap(self) -> None:
        self._run(["bootstrap", f"aws://{self.account()}/{self.region}", "--app", str(self.out_dir)])

    def deploy_stacks(self) -> None:
        self._run(
            [
                "deploy",
                "--all",
                "--app",
                str(self.out_dir),
                "--require-approval",
                "never",
                "--method",
                "direct",
                "--progress",
                "events",
                "--concurrency",
                "1",
            ]
        )

    def outcomes(self, stack_names: Sequence[str]) -> list[StackOutcome]:
        """What each stack holds at the endpoint against its template: moto lists the types it skipped with an empty
        type (and CREATE_COMPLETE), so the template's type of every such resource is reported as skipped."""
        cfn = self.client("cloudformation")
        manifest = json.loads((self.out_dir / "manifest.json").read_text())
        templates = {
            a["properties"].get("stackName", aid): self.out_dir / a["properties"]["templateFile"]
            for aid, a in manifest["artifacts"].items()
            if a["type"] == "aws:cloudformation:stack"
        }
        outcomes = []
        for name in stack_names:
            resources = json.loads(templates[name].read_text())["Resources"]
            listed = {
                r["LogicalResourceId"]: r
                for r in _paginate(cfn, "list_stack_resources", "StackResourceSummaries", StackName=name)
            }
            outcome = StackOutcome(name)
            for logical_id, resource in resources.items():
                kind = resource["Type"]
                found = listed.get(logical_id)
                if kind == "AWS::CDK::Metadata":
                    continue
                if found and found.get("ResourceType") and found.get("ResourceStatus", "").endswith("_COMPLETE"):
                    outcome.created[kind] += 1
                else:
                    outcome.skipped[kind] += 1
            outcomes.append(outcome)
        return outcomes

    def run(self) -> DeployReport:
        """Synthesize, check names, bootstrap if needed, deploy; report what each stack holds."""
        seconds: dict[str, float] = {}
        started = time.monotonic()
        self.log(f"synthesizing the CDK app (prefix {self.prefix}) into {self.out_dir}")
        self.synth()
        seconds["synth"] = time.monotonic() - started
        self.check_conflicts()
        bootstrapped = False
        if not self.bootstrapped():
            mark = time.monotonic()
            self.log(f"bootstrapping {self.endpoint_url} (CDKToolkit: the asset bucket and roles)")
            self.bootstrap()
            bootstrapped = True
            seconds["bootstrap"] = time.monotonic() - mark
        mark = time.monotonic()
        names = self.stack_names()
        self.log(f"deploying {', '.join(names)} to {self.endpoint_url}")
        self.deploy_stacks()
        seconds["deploy"] = time.monotonic() - mark
        left_out = {f"{self.prefix}-{part}": why for part, why in NOT_ON_MOTO.items()}
        report = DeployReport(self.endpoint_url, self.prefix, self.outcomes(names), left_out, bootstrapped, seconds)
        seconds["total"] = time.monotonic() - started
        return report

    def _run(self, args: list[str]) -> None:
        command = [str(self.cli), *args, "--no-notices", "--no-version-reporting"]
        result = subprocess.run(
            command,
            cwd=self.infra_dir,
            env=self.env,
            text=True,
            stdout=None if self.echo_cli else subprocess.PIPE,
            stderr=None if self.echo_cli else subprocess.STDOUT,
        )
        if result.returncode != 0:
            tail = "" if self.echo_cli else "\n" + "\n".join((result.stdout or "").splitlines()[-40:])
            raise DependencyError(f"cdk {args[0]} failed (exit {result.returncode}){tail}")


def _paginate(client: Any, operation: str, key: str, **kwargs: Any) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    token: str | None = None
    while True:
        page = getattr(client, operation)(**kwargs, **({"NextToken": token} if token else {}))
        items += page.get(key, [])
        token = page.get("NextToken")
        if not token:
            return items
