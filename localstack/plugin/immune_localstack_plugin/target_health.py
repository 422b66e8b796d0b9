"""ELBv2 target health as AWS reports it, instead of moto's "healthy" for every target.

AWS pages followed:
- TargetHealth (states and reason codes):
  https://docs.aws.amazon.com/elasticloadbalancing/latest/APIReference/API_TargetHealth.html
- Health checks for Application Load Balancer target groups ("After your target is
  registered, it must pass one health check to be considered healthy"):
  https://docs.aws.amazon.com/elasticloadbalancing/latest/application/target-group-health-checks.html
- Deregistration delay (draining for deregistration_delay.timeout_seconds, 300 by default):
  https://docs.aws.amazon.com/elasticloadbalancing/latest/application/edit-target-group-attributes.html#deregistration-delay
- Auto Scaling deregisters the instances it takes out from its target groups:
  https://docs.aws.amazon.com/autoscaling/ec2/userguide/autoscaling-load-balancer.html

What DescribeTargetHealth answers for a target:
- not registered (named in the request): unused, Target.NotRegistered;
- deregistered (DeregisterTargets, or Auto Scaling taking its instance out) from a group
  in use: draining, Target.DeregistrationInProgress, for the group's deregistration
  delay, then gone; from a group not in use: gone at once;
- its instance stopped, stopping, shutting-down or terminated: unused, Target.InvalidState;
- its group not in use (no listener default action and no rule forwards to it, with
  any weight, 0 included): unused, Target.NotInUse;
- for one health check interval (HealthCheckIntervalSeconds) from the latest of its
  registration, its group coming into use and its instance starting: initial,
  Elb.InitialHealthChecking;
- then healthy; or, for an instance tagged immune-localstack:health = unhealthy,
  unhealthy, Target.ResponseCodeMismatch (the emulator's way to fail health checks).

Intervals and delays are multiplied by the time scale (gateway.time_scale: env
IMMUNE_LOCALSTACK_TIME_SCALE, default 0.05, or the group's immune-localstack:time-scale
tag). Auto Scaling's own view of instance health is left as it was (moto's Healthy).
"""

import threading
import time

from localstack.runtime import hooks

from .gateway import HEALTH_TAG, time_scale

STOPPED = {"stopped", "stopping", "shutting-down", "terminated"}

DESCRIPTIONS = {
    "Target.NotRegistered": "Target is not registered to the target group",
    "Target.NotInUse": "Target group is not configured to receive traffic from the load balancer",
    "Target.DeregistrationInProgress": "Target deregistration is in progress",
    "Elb.InitialHealthChecking": "Initial health checks in progress",
}

_lock = threading.RLock()


def _state(target_group) -> dict:
    """The emulator's bookkeeping for one target group (kept on the moto object)."""
    return target_group.__dict__.setdefault(
        "_immune_health",
        {"registered_at": {}, "draining": {}, "in_use_since": None},
    )


def _forwarded_arns(action) -> set[str]:
    data = getattr(action, "data", action)
    if not isinstance(data, dict) or data.get("Type") != "forward":
        return set()
    arns = {data["TargetGroupArn"]} if data.get("TargetGroupArn") else set()
    for group in (data.get("ForwardConfig") or {}).get("TargetGroups") or []:
        if group.get("TargetGroupArn"):
            arns.add(group["TargetGroupArn"])
    return arns


def in_use_arns(backend) -> set[str]:
    """Target groups some listener's default actions or some rule's actions forward to."""
    used = set()
    for balancer in backend.load_balancers.values():
        for listener in balancer.listeners.values():
            for action in listener.default_actions or []:
                used |= _forwarded_arns(action)
            for rule in listener.rules.values():
                for action in rule.actions or []:
                    used |= _forwarded_arns(action)
    return used


def refresh_use(backend) -> None:
    """Notes when each target group came into use (or that it is out of use)."""
    used = in_use_arns(backend)
    now = time.time()
    with _lock:
        for group in backend.target_groups.values():
            state = _state(group)
            if group.arn in used:
                if state["in_use_since"] is None:
                    state["in_use_since"] = now
            else:
                state["in_use_since"] = None


def _scale(backend, group) -> float:
    return time_scale(backend.tagging_service.get_tag_dict_for_resource(group.arn))


def _seconds(value, default: float) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return default


@hooks.on_infra_start()
def immune_model_target_health() -> None:
    from moto.ec2.models.instances import Instance, InstanceBackend
    from moto.elbv2.exceptions import TargetGroupNotFoundError
    from moto.elbv2.models import ELBv2Backend, FakeHealthStatus, FakeTargetGroup, elbv2_backends

    # --- when an instance last started running ------------------------------------
    original_run = InstanceBackend.run_instances

    def run_instances(self, *args, **kwargs):
        reservation = original_run(self, *args, **kwargs)
        now = time.time()
        for instance in reservation.instances:
            instance.__dict__.setdefault("_immune_running_since", now)
        return reservation

    InstanceBackend.run_instances = run_instances

    original_start = Instance.start

    def start(self, *args, **kwargs):
        was = self.state
        result = original_start(self, *args, **kwargs)
        if was != "running":
            self.__dict__["_immune_running_since"] = time.time()
        return result

    Instance.start = start

    # --- registration and deregistration -------------------------------------------
    def backend_of(group):
        return elbv2_backends[group.account_id][group.region_name]

    original_register = FakeTargetGroup.register

    def register(self, targets):
        original_register(self, targets)
        now = time.time()
        with _lock:
            state = _state(self)
            for target in targets:
                state["draining"].pop(target["Id"], None)
                state["registered_at"].setdefault(target["Id"], now)

    FakeTargetGroup.register = register

    original_deregister = FakeTargetGroup.deregister

    def deregister(self, targets):
        backend = backend_of(self)
        refresh_use(backend)
        removed = {t["Id"]: self.targets.get(t["Id"]) for t in targets}
        original_deregister(self, targets)
        now = time.time()
        with _lock:
            state = _state(self)
            delay = _seconds(self.attributes.get("deregistration_delay.timeout_seconds"), 300.0)
            until = now + delay * _scale(backend, self)
            for target_id, target in removed.items():
                state["registered_at"].pop(target_id, None)
                if state["in_use_since"] is not None and target is not None and until > now:
                    state["draining"][target_id] = (dict(target), until)

    FakeTargetGroup.deregister = deregister

    # moto marks every terminated instance "draining" forever. On AWS a target whose
    # instance is terminated stays registered (unused, Target.InvalidState) unless Auto
    # Scaling took it out, in which case Auto Scaling deregistered it from the group's
    # target groups (draining).
    def notify_terminate_instances(self, instance_ids):
        for instance_id in instance_ids:
            instance = self.ec2_backend.get_instance_by_id(instance_id)
            group = getattr(instance, "autoscaling_group", None) if instance else None
            if group is None:
                continue
            for arn in list(getattr(group, "target_group_arns", None) or []):
                target_group = self.target_groups.get(arn)
                if target_group is not None and instance_id in target_group.targets:
                    target_group.deregister([{"Id": instance_id}])

    ELBv2Backend.notify_terminate_instances = notify_terminate_instances

    # --- what DescribeTargetHealth answers ------------------------------------------
    def status(group, target, port, state, reason=None, description=None):
        return FakeHealthStatus(
            target, port, group.health_check_port, state, reason,
            description if description is not None else DESCRIPTIONS.get(reason),
        )

    def live_draining(group, now):
        with _lock:
            draining = _state(group)["draining"]
            for target_id in [i for i, (_, until) in draining.items() if until <= now]:
                del draining[target_id]
            return dict(draining)

    def health_for(self, target, ec2_backend):
        backend = backend_of(self)
        now = time.time()
        target_id = target["Id"]
        registered = self.targets.get(target_id)
        if registered is None:
            drain = live_draining(self, now).get(target_id)
            if drain is not None:
                return status(self, target_id, drain[0].get("Port", self.port), "draining",
                              "Target.DeregistrationInProgress")
            return status(self, target_id, target.get("Port", self.port), "unused", "Target.NotRegistered")
        port = registered["Port"]
        instance = ec2_backend.get_instance_by_id(target_id) if target_id.startswith("i-") else None
        if instance is not None and instance.state in STOPPED:
            return status(self, target_id, port, "unused", "Target.InvalidState",
                          f"Target is in the {instance.state} state")
        with _lock:
            state = _state(self)
            in_use_since = state["in_use_since"]
            registered_at = state["registered_at"].get(target_id, 0.0)
        if in_use_since is None:
            return status(self, target_id, port, "unused", "Target.NotInUse")
        running_since = instance.__dict__.get("_immune_running_since", 0.0) if instance else 0.0
        checked_from = max(registered_at, in_use_since, running_since)
        interval = _seconds(self.health_check_interval_seconds, 30.0) * _scale(backend, self)
        if now < checked_from + interval:
            return status(self, target_id, port, "initial", "Elb.InitialHealthChecking")
        if instance is not None and ec2_backend.tags.get(instance.id, {}).get(HEALTH_TAG) == "unhealthy":
            return status(self, target_id, port, "unhealthy", "Target.ResponseCodeMismatch",
                          "Health checks failed with these codes: [500]")
        return status(self, target_id, port, "healthy")

    FakeTargetGroup.health_for = health_for

    def describe_target_health(self, target_group_arn, targets):
        group = self.target_groups.get(target_group_arn)
        if group is None:
            raise TargetGroupNotFoundError()
        refresh_use(self)
        if not targets:
            now = time.time()
            targets = list(group.targets.values()) + [t for t, _ in live_draining(group, now).values()]
        return [group.health_for(target, self.ec2_backend) for target in targets]

    ELBv2Backend.describe_target_health = describe_target_health

    # A group's use changes with listeners and rules: note it right after each change.
    def refreshing(original):
        def call(self, *args, **kwargs):
            result = original(self, *args, **kwargs)
            refresh_use(self)
            return result

        return call

    for name in (
        "create_listener", "modify_listener", "delete_listener", "create_rule", "modify_rule",
        "delete_rule", "delete_load_balancer", "create_target_group",
    ):
        setattr(ELBv2Backend, name, refreshing(getattr(ELBv2Backend, name)))
