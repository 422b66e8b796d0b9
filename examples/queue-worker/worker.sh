#!/bin/sh
# The worker's side of an immune worker fleet: take jobs until Auto Scaling says this
# instance is leaving, finish the job in hand, then tell Auto Scaling it may go.
#
# Auto Scaling marks a leaving instance in its metadata (target-lifecycle-state becomes
# "Terminated") and holds it in Terminating:Wait until the lifecycle action of immune's
# hook ("immune-termination") is completed, or until instances.termination_grace is
# over. The instance profile needs autoscaling:CompleteLifecycleAction,
# autoscaling:RecordLifecycleActionHeartbeat and autoscaling:DescribeAutoScalingInstances.
set -eu

HOOK=immune-termination
IMDS=http://169.254.169.254/latest

# IMDSv2 (immune requires session tokens unless metadata.http_tokens says otherwise).
metadata() {
  token=$(curl -s -X PUT "$IMDS/api/token" -H "X-aws-ec2-metadata-token-ttl-seconds: 300")
  curl -s -H "X-aws-ec2-metadata-token: $token" "$IMDS/meta-data/$1"
}

INSTANCE=$(metadata instance-id)
export AWS_DEFAULT_REGION=$(metadata placement/region)
GROUP=$(aws autoscaling describe-auto-scaling-instances --instance-ids "$INSTANCE" \
  --query 'AutoScalingInstances[0].AutoScalingGroupName' --output text)

leaving() {
  [ "$(metadata autoscaling/target-lifecycle-state)" = "Terminated" ]
}

while ! leaving; do
  # One job at a time; a job longer than the grace sends heartbeats while it runs:
  #   aws autoscaling record-lifecycle-action-heartbeat --lifecycle-hook-name $HOOK \
  #     --auto-scaling-group-name "$GROUP" --instance-id "$INSTANCE"
  /opt/jobs/run-one-job || echo "job failed" >&2
done

aws autoscaling complete-lifecycle-action --lifecycle-hook-name "$HOOK" \
  --auto-scaling-group-name "$GROUP" --instance-id "$INSTANCE" \
  --lifecycle-action-result CONTINUE
