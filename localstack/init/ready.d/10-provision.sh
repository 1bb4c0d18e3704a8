#!/bin/bash
# LocalStack ready hook: create rtrec's tables, stream, buckets and queue from layers/core/rtrec/resources.py
# (mounted at /opt/rtrec), with the same Provisioner the embedded cloud uses, so the names cannot differ.
# Idempotent: what exists is left alone. Skip it with RTREC_SKIP_PROVISION=1 (e.g. before `cdklocal deploy`, which
# creates the same resources through CloudFormation and would find them taken).
set -euo pipefail

if [ "${RTREC_SKIP_PROVISION:-0}" = "1" ]; then
  echo "rtrec: provisioning skipped (RTREC_SKIP_PROVISION=1)"
  exit 0
fi

# LocalStack's own virtualenv has boto3; the system python may not.
PYTHON=/opt/code/localstack/.venv/bin/python
[ -x "$PYTHON" ] || PYTHON=python3

PYTHONPATH=/opt/rtrec "$PYTHON" - <<'PY'
import os

from rtrec.adapters.aws.provision import Provisioner
from rtrec.resources import ResourceNames

names = ResourceNames(prefix=os.environ.get("RTREC_PREFIX", "rtrec"))
report = Provisioner(names, endpoint_url="http://localhost:4566",
                     region=os.environ.get("AWS_DEFAULT_REGION", "us-east-1")).provision()
print(f"rtrec: created {', '.join(report.created) or 'nothing'}; already there {', '.join(report.existing) or 'nothing'}")
PY
