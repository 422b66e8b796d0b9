#!/usr/bin/env bash
# LocalStack container boot hook (mounted into /etc/localstack/init/boot.d by
# ../docker-compose.yml): installs the autoscaling/elbv2 provider plugin into the
# image's Python before the runtime starts. Not tested on the project's machines,
# which have no Docker engine.
set -euo pipefail
# Built from a copy: setuptools writes build files next to the sources, mounted read-only.
rm -rf /tmp/immune-localstack-plugin
cp -r /opt/immune-localstack-plugin /tmp/immune-localstack-plugin
python -m pip install --quiet --no-deps --no-build-isolation /tmp/immune-localstack-plugin
