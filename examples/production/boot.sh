#!/bin/sh
echo "release=${release}" > /etc/api-release
systemctl restart api
