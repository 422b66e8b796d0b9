#!/bin/sh
# Runs once on the builder instance; the image is captured afterwards.
set -eu
apt-get update -q
apt-get install -y -q awscli curl
install -d /opt/jobs
cat > /opt/jobs/worker.sh <<'WORKER'
${worker}
WORKER
chmod +x /opt/jobs/worker.sh
cat > /etc/systemd/system/jobs-worker.service <<'UNIT'
[Unit]
Description=Queue worker
After=network-online.target

[Service]
ExecStart=/opt/jobs/worker.sh
Restart=on-failure

[Install]
WantedBy=multi-user.target
UNIT
systemctl enable jobs-worker.service
