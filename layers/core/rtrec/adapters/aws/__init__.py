"""boto3 adapters. They talk to whatever endpoint they are given: the embedded cloud, LocalStack or AWS."""
