#!/bin/sh
# Runs once on the builder instance; the image is captured afterwards.
set -eu
apt-get update -q
apt-get install -y -q python3
