"""The local tooling, apart from the runtime: the `rtrec` command line (`rtrec_local.cli`) and the embedded local
cloud (persistent emulators behind one port, provisioning, the event source mapping, the scheduler, the job runner,
the state folder). It imports the core (`rtrec`), the Lambda handlers (`functions`) and training; none of them, and
no Lambda layer, imports it."""
