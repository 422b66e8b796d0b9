"""LocalStack plays Auto Scaling's termination lifecycle hooks.

moto stores lifecycle hooks but never runs them: a group scaled in terminates its
instances at once, and CompleteLifecycleAction and RecordLifecycleActionHeartbeat do
not exist. immune's worker fleets rely on the hook (src/engine/actions.rs,
`drain_workers`), so here, as on AWS, a group with an
`autoscaling:EC2_INSTANCE_TERMINATING` hook that scales in moves each leaving instance
to `Terminating:Wait`, where it stays (listed in the group, not counted as InService)
until

- its worker completes the lifecycle action (CompleteLifecycleAction by instance id or
  token, with CONTINUE or ABANDON: both terminate it), or
- the hook's heartbeat timeout passes since it started waiting (or since the last
  RecordLifecycleActionHeartbeat), after which the hook's default result applies and
  the instance is terminated.

The timeout is checked whenever the group is read or changed (DescribeAutoScalingGroups,
DescribeAutoScalingInstances, a scale, a lifecycle call), which is how immune and the
tests see it. Deleting a group with ForceDelete skips its hooks, as on AWS.
"""

import time
import uuid

from localstack.runtime import hooks

TERMINATING = "autoscaling:EC2_INSTANCE_TERMINATING"
WAITING = "Terminating:Wait"


@hooks.on_infra_start()
def immune_play_lifecycle_hooks() -> None:
    from moto.autoscaling.exceptions import ValidationError
    from moto.autoscaling.models import AutoScalingBackend, FakeAutoScalingGroup
    from moto.autoscaling.responses import AutoScalingResponse
    from moto.core.responses import EmptyResult

    def hook_of(group, name=None):
        for hook in group.autoscaling_backend.lifecycle_hooks.values():
            if (
                hook.auto_scaling_group_name == group.name
                and hook.lifecycle_transition == TERMINATING
                and (name is None or hook.name == name)
            ):
                return hook
        return None

    def finish(group, states) -> None:
        if not states:
            return
        group.autoscaling_backend.ec2_backend.terminate_instances(
            [state.instance.id for state in states]
        )
        group.instance_states = [s for s in group.instance_states if s not in states]

    def expire(group) -> None:
        now = time.time()
        finish(
            group,
            [
                s
                for s in group.instance_states
                if s.lifecycle_state == WAITING and s.immune_deadline <= now
            ],
        )

    original_set_desired = FakeAutoScalingGroup.set_desired_capacity

    def set_desired_capacity(self, new_capacity):
        hook = hook_of(self)
        if hook is None:
            return original_set_desired(self, new_capacity)
        expire(self)
        desired = (self.min_size if new_capacity is None else new_capacity) or 0
        in_service = [s for s in self.instance_states if s.lifecycle_state == "InService"]
        if desired >= len(in_service):
            # Growing (or nothing to do): moto's own path counts InService only.
            return original_set_desired(self, new_capacity)
        self.desired_capacity = desired
        leaving = [s for s in in_service if not s.protected_from_scale_in]
        deadline = time.time() + hook.heartbeat_timeout
        for state in leaving[: len(in_service) - desired]:
            state.lifecycle_state = WAITING
            state.immune_deadline = deadline
            state.immune_token = str(uuid.uuid4())

    FakeAutoScalingGroup.set_desired_capacity = set_desired_capacity

    def expiring(original):
        def read(self, *args, **kwargs):
            for group in list(self.autoscaling_groups.values()):
                expire(group)
            return original(self, *args, **kwargs)

        return read

    AutoScalingBackend.describe_auto_scaling_groups = expiring(
        AutoScalingBackend.describe_auto_scaling_groups
    )
    AutoScalingBackend.describe_auto_scaling_instances = expiring(
        AutoScalingBackend.describe_auto_scaling_instances
    )

    def waiting(response):
        """The group, its hook and the instance waiting on it that the call names."""
        name = response._get_param("AutoScalingGroupName")
        group = response.autoscaling_backend.autoscaling_groups.get(name)
        if group is None:
            raise ValidationError(f"AutoScalingGroup name not found - AutoScalingGroup '{name}' not found")
        hook_name = response._get_param("LifecycleHookName")
        hook = hook_of(group, hook_name)
        if hook is None:
            raise ValidationError(f"No Lifecycle Hook found with name {hook_name} for group {name}")
        expire(group)
        instance_id = response._get_param("InstanceId")
        token = response._get_param("LifecycleActionToken")
        for state in group.instance_states:
            if state.lifecycle_state == WAITING and (
                state.instance.id == instance_id or (token and state.immune_token == token)
            ):
                return group, hook, state
        raise ValidationError(
            f"No active Lifecycle Action found with instance ID {instance_id or token}"
        )

    def complete_lifecycle_action(self):
        group, _, state = waiting(self)
        # CONTINUE and ABANDON both end a termination.
        finish(group, [state])
        return EmptyResult()

    def record_lifecycle_action_heartbeat(self):
        _, hook, state = waiting(self)
        state.immune_deadline = time.time() + hook.heartbeat_timeout
        return EmptyResult()

    AutoScalingResponse.complete_lifecycle_action = complete_lifecycle_action
    AutoScalingResponse.record_lifecycle_action_heartbeat = record_lifecycle_action_heartbeat
