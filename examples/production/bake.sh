#!/bin/sh
# Runs once on the builder as root; immune powers the builder off when this exits 0.
set -eu
apt-get update
apt-get install -y nginx
# Artifacts come from S3 with the builder's instance profile, not inside this script.
aws s3 cp "s3://acme-artifacts/api/current.tar.gz" /tmp/api.tar.gz
tar -xzf /tmp/api.tar.gz -C /opt
systemctl enable nginx
