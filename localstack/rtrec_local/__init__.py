"""The embedded local cloud: moto server in-process, provisioning, and the state folder."""
