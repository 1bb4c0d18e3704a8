"""Search: an OpenSearch Service domain for k-NN item retrieval (`OpenSearchVectorIndex`), with fine-grained
access control.

k-NN ships with every OpenSearch Service domain (the index mapping turns it on: `index.knn: true`, `knn_vector`
fields, the `faiss` HNSW engine, as `rtrec/adapters/search/opensearch_index.py` builds them). Access: the domain
policy trusts the account and IAM decides who signs requests (the API reads, the training role writes item
vectors, both granted in their own stacks); inside the domain, fine-grained access control maps those IAM roles to
OpenSearch roles, with the admin role below as its master user. Serving uses the FAISS index of the model folder
until it switches to this domain; the grants are what the OpenSearch adapter needs.
"""

from __future__ import annotations

from aws_cdk import CfnOutput, RemovalPolicy, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_logs as logs
from aws_cdk import aws_opensearchservice as opensearch
from constructs import Construct

from infra_cdk.config import InfraConfig, search_domain_name
from infra_cdk.stacks.common import removal_policy, retention, suppress

ENGINE = opensearch.EngineVersion.OPENSEARCH_2_19


class SearchStack(Stack):
    def __init__(self, scope: Construct, construct_id: str, *, config: InfraConfig, **kwargs) -> None:
        super().__init__(scope, construct_id, **kwargs)
        domain_name = search_domain_name(config)
        self.admin_role = iam.Role(
            self,
            "SearchAdminRole",
            role_name=f"{config.prefix}-search-admin",
            assumed_by=iam.AccountRootPrincipal(),
            description="master user of the OpenSearch domain's fine-grained access control (role mappings, indices)",
        )
        log_groups = {
            kind: logs.LogGroup(
                self, f"{kind}Logs", retention=retention(config.log_retention_days), removal_policy=removal_policy(config)
            )
            for kind in ("App", "SearchSlow", "IndexSlow")
        }
        masters = config.opensearch_master_nodes
        zones = 2 if config.opensearch_data_nodes >= 2 else 1
        self.domain = opensearch.Domain(
            self,
            "Domain",
            domain_name=domain_name,
            version=ENGINE,
            capacity=opensearch.CapacityConfig(
                data_nodes=config.opensearch_data_nodes,
                data_node_instance_type=config.opensearch_data_node_type,
                master_nodes=masters or None,
                master_node_instance_type=config.opensearch_master_node_type if masters else None,
                multi_az_with_standby_enabled=False,
            ),
            ebs=opensearch.EbsOptions(volume_size=config.opensearch_volume_gb),
            zone_awareness=opensearch.ZoneAwarenessConfig(
                enabled=zones > 1, availability_zone_count=zones if zones > 1 else None
            ),
            enforce_https=True,
            tls_security_policy=opensearch.TLSSecurityPolicy.TLS_1_2,
            node_to_node_encryption=True,
            encryption_at_rest=opensearch.EncryptionAtRestOptions(enabled=True),
            fine_grained_access_control=opensearch.AdvancedSecurityOptions(master_user_arn=self.admin_role.role_arn),
            logging=opensearch.LoggingOptions(
                app_log_enabled=True,
                app_log_group=log_groups["App"],
                slow_search_log_enabled=True,
                slow_search_log_group=log_groups["SearchSlow"],
                slow_index_log_enabled=True,
                slow_index_log_group=log_groups["IndexSlow"],
            ),
            # The log groups' resource policy below, instead of the custom resource (a Lambda) CDK would add.
            suppress_logs_resource_policy=True,
            removal_policy=RemovalPolicy.RETAIN if config.retain else RemovalPolicy.DESTROY,
        )
        # The domain's resource policy, set on the CloudFormation resource: the Domain construct's `access_policies`
        # would add a custom resource (a Lambda) to apply it after creation.
        domain_paths = self.format_arn(service="es", resource="domain", resource_name=f"{domain_name}/*")
        cfn_domain = self.domain.node.default_child
        cfn_domain.access_policies = iam.PolicyDocument(
            statements=[
                iam.PolicyStatement(principals=[iam.AccountRootPrincipal()], actions=["es:ESHttp*"], resources=[domain_paths])
            ]
        ).to_json()
        logs.ResourcePolicy(
            self,
            "LogsPolicy",
            resource_policy_name=f"{domain_name}-logs",
            policy_statements=[
                iam.PolicyStatement(
                    principals=[iam.ServicePrincipal("es.amazonaws.com")],
                    actions=["logs:PutLogEvents", "logs:CreateLogStream"],
                    resources=[g.log_group_arn for g in log_groups.values()],
                )
            ],
        )
        if not masters:
            suppress(
                self.domain,
                "AwsSolutions-OS4",
                "dedicated master nodes are turned off by `-c opensearch_master_nodes=0` (a dev domain)",
            )
        if zones == 1:
            suppress(self.domain, "AwsSolutions-OS7", "a single data node (dev domain) cannot span zones")
        suppress(
            self.domain,
            "AwsSolutions-OS1",
            "a public endpoint guarded by IAM-signed requests and fine-grained access control: the Lambdas run "
            "outside a VPC (Kinesis, DynamoDB and S3 need no VPC, and NAT gateways would cost more than the "
            "domain); move the domain and the API into a VPC with endpoints if the threat model requires it",
        )
        suppress(
            self.domain,
            "AwsSolutions-OS3",
            "access is decided by IAM identity policies (the API and training roles) and fine-grained access "
            "control, not by source IPs: Lambda has no fixed addresses outside a VPC",
        )
        CfnOutput(
            self,
            "SearchEndpoint",
            value=self.domain.domain_endpoint,
            description="the OpenSearch endpoint (OpenSearchVectorIndex)",
        )
