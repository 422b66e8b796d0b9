#!/bin/sh
# Runs at every instance start: serve /healthz on 8080 for release ${release}.
set -eu
mkdir -p /srv/www && echo "ok ${release}" > /srv/www/healthz
cd /srv/www && exec python3 -m http.server 8080
