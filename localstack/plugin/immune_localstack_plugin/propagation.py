"""Eventual consistency after a create, as AWS documents it.

"If you run a command to modify or describe the resource that you just created, its ID
might not have propagated throughout the system, and you will get an error responding
that the resource does not exist."
https://docs.aws.amazon.com/ec2/latest/devguide/eventual-consistency.html
(Elastic Load Balancing and Auto Scaling APIs are eventually consistent the same way.)

For a propagation delay after a create, requests that name the new resource answer as
AWS answers for an unknown one, and listings that do not name it leave it out:

| created by | named in | answer |
| --- | --- | --- |
| RunInstances | DescribeInstances(InstanceIds), DescribeInstanceStatus(InstanceIds), GetConsoleOutput, StopInstances, TerminateInstances | InvalidInstanceID.NotFound |
| CreateImage | DescribeImages(ImageIds) | InvalidAMIID.NotFound |
| CreateLaunchTemplate | DescribeLaunchTemplates / DescribeLaunchTemplateVersions by id | InvalidLaunchTemplateId.NotFound |
| CreateLaunchTemplate | the same by name | InvalidLaunchTemplateName.NotFoundException |
| CreateLaunchTemplateVersion | DescribeLaunchTemplateVersions(Versions=[n]) | InvalidLaunchTemplateId.VersionNotFound |
| CreateTargetGroup | DescribeTargetGroups(TargetGroupArns or Names), DescribeTargetHealth, ModifyTargetGroupAttributes, DescribeTargetGroupAttributes, DescribeTags | TargetGroupNotFound |
| CreateAutoScalingGroup | DescribeAutoScalingGroups | left out (AWS answers an empty list, not an error) |

Left out of listings during the delay: DescribeInstances and DescribeInstanceStatus
without InstanceIds (tag filters...), DescribeImages without ImageIds,
DescribeLaunchTemplates without ids or names, DescribeLaunchTemplateVersions without
Versions, DescribeTargetGroups without ARNs or names, DescribeAutoScalingGroups.

The delay is gateway.propagation_seconds: env IMMUNE_LOCALSTACK_PROPAGATION_SECONDS
(default 0.2), or the create's tag immune-localstack:propagation (TagSpecifications of
any resource type for EC2, Tags for ELB and Auto Scaling; a new launch template
version uses its template's tag). Only requests from clients are affected; what
LocalStack or moto do internally (an Auto Scaling group launching from a new template)
sees everything at once.
"""

import threading
import time

from localstack.runtime import hooks

from .gateway import add_request_handler, add_response_handler, operation_of, propagation_seconds, refuse

_lock = threading.Lock()
# (account, region, kind, identifier) -> time.time() when it becomes visible
_hidden: dict[tuple, float] = {}


def hide(context, keys: list[tuple[str, str]], delay: float) -> None:
    if delay <= 0 or not keys:
        return
    until = time.time() + delay
    with _lock:
        for kind, ident in keys:
            _hidden[(context.account_id, context.region, kind, ident)] = until


def hidden_keys(context) -> set[tuple[str, str]]:
    """The (kind, identifier) pairs still propagating in the request's account/region."""
    now = time.time()
    with _lock:
        if not _hidden:
            return set()
        for key in [k for k, until in _hidden.items() if until <= now]:
            del _hidden[key]
        return {
            (kind, ident)
            for (account, region, kind, ident) in _hidden
            if account == context.account_id and region == context.region
        }


def _tags_of_specs(specs) -> dict:
    return {
        tag.get("Key"): tag.get("Value")
        for spec in specs or []
        for tag in spec.get("Tags") or []
    }


def _tags_of_list(tags) -> dict:
    return {tag.get("Key"): tag.get("Value") for tag in tags or []}


# --- creates ---------------------------------------------------------------------------
def _created(context) -> tuple[list[tuple[str, str]], dict]:
    """What the request created, as (kind, identifier) pairs, and its tags."""
    service, operation = operation_of(context)
    request, response = context.service_request, context.service_response
    if (service, operation) == ("ec2", "RunInstances"):
        keys = [("instance", i["InstanceId"]) for i in response.get("Instances") or []]
        return keys, _tags_of_specs(request.get("TagSpecifications"))
    if (service, operation) == ("ec2", "CreateImage"):
        return [("image", response["ImageId"])], _tags_of_specs(request.get("TagSpecifications"))
    if (service, operation) == ("ec2", "CreateLaunchTemplate"):
        template = response.get("LaunchTemplate") or {}
        template_id, name = template.get("LaunchTemplateId"), template.get("LaunchTemplateName")
        keys = [("lt-id", template_id), ("lt-name", name), ("lt-version", f"{template_id}:1"),
                ("lt-version", f"name:{name}:1")]
        return keys, _tags_of_specs(request.get("TagSpecifications"))
    if (service, operation) == ("ec2", "CreateLaunchTemplateVersion"):
        version = response.get("LaunchTemplateVersion") or {}
        template_id, name = version.get("LaunchTemplateId"), version.get("LaunchTemplateName")
        number = version.get("VersionNumber")
        keys = [("lt-version", f"{template_id}:{number}"), ("lt-version", f"name:{name}:{number}")]
        return keys, _template_tags(context, template_id)
    if (service, operation) == ("elbv2", "CreateTargetGroup"):
        keys = []
        for group in response.get("TargetGroups") or []:
            keys += [("tg", group["TargetGroupArn"]), ("tg-name", group["TargetGroupName"])]
        return keys, _tags_of_list(request.get("Tags"))
    if (service, operation) == ("autoscaling", "CreateAutoScalingGroup"):
        return [("asg", request["AutoScalingGroupName"])], _tags_of_list(request.get("Tags"))
    return [], {}


def _template_tags(context, template_id) -> dict:
    from moto.ec2.models import ec2_backends

    backend = ec2_backends[context.account_id][context.region]
    return dict(backend.tags.get(template_id) or {})


def on_response(context):
    keys, tags = _created(context)
    if keys:
        hide(context, keys, propagation_seconds(tags))
        return None
    if context.is_internal_call:
        return None
    return _filter_listing(context)


# --- requests naming a propagating resource ----------------------------------------------
def _instances_not_found(ids):
    if len(ids) > 1:
        refuse("InvalidInstanceID.NotFound", f"The instance IDs '{', '.join(ids)}' do not exist")
    refuse("InvalidInstanceID.NotFound", f"The instance ID '{ids[0]}' does not exist")


def on_request(context) -> None:
    if context.is_internal_call:
        return
    service, operation = operation_of(context)
    if service not in ("ec2", "elbv2"):
        return
    hidden = hidden_keys(context)
    if not hidden:
        return
    request = context.service_request

    def named(kind, values):
        return [v for v in values or [] if (kind, v) in hidden]

    if service == "ec2":
        if operation in ("DescribeInstances", "DescribeInstanceStatus", "StopInstances", "TerminateInstances"):
            if missing := named("instance", request.get("InstanceIds")):
                _instances_not_found(missing)
        elif operation == "GetConsoleOutput":
            if missing := named("instance", [request.get("InstanceId")]):
                _instances_not_found(missing)
        elif operation == "DescribeImages":
            if missing := named("image", request.get("ImageIds")):
                amis = ", ".join(missing)
                refuse("InvalidAMIID.NotFound", f"The image id '[{amis}]' does not exist")
        elif operation == "DescribeLaunchTemplates":
            if missing := named("lt-id", request.get("LaunchTemplateIds")):
                refuse("InvalidLaunchTemplateId.NotFound",
                       f"The specified launch template, with template ID {missing[0]}, does not exist.")
            if missing := named("lt-name", request.get("LaunchTemplateNames")):
                refuse("InvalidLaunchTemplateName.NotFoundException",
                       f"The specified launch template, with template name {missing[0]}, does not exist.")
        elif operation == "DescribeLaunchTemplateVersions":
            template_id, name = request.get("LaunchTemplateId"), request.get("LaunchTemplateName")
            if template_id and ("lt-id", template_id) in hidden:
                refuse("InvalidLaunchTemplateId.NotFound",
                       f"The specified launch template, with template ID {template_id}, does not exist.")
            if name and ("lt-name", name) in hidden:
                refuse("InvalidLaunchTemplateName.NotFoundException",
                       f"The specified launch template, with template name {name}, does not exist.")
            prefix = template_id if template_id else f"name:{name}"
            for version in request.get("Versions") or []:
                if ("lt-version", f"{prefix}:{version}") in hidden:
                    shown = template_id or name
                    refuse("InvalidLaunchTemplateId.VersionNotFound",
                           f"Could not find the specified version {version} for the launch template with ID {shown}.")
        return

    not_found = ("TargetGroupNotFound", "One or more target groups not found")
    if operation == "DescribeTargetGroups":
        if named("tg", request.get("TargetGroupArns")) or named("tg-name", request.get("Names")):
            refuse(*not_found)
    elif operation in ("DescribeTargetHealth", "ModifyTargetGroupAttributes", "DescribeTargetGroupAttributes"):
        if named("tg", [request.get("TargetGroupArn")]):
            refuse(*not_found)
    elif operation == "DescribeTags":
        if named("tg", request.get("ResourceArns")):
            refuse(*not_found)


# --- listings that do not name the resource ------------------------------------------------
def _filter_listing(context):
    service, operation = operation_of(context)
    request, response = context.service_request, context.service_response
    key = (service, operation)
    interesting = {
        ("ec2", "DescribeInstances"), ("ec2", "DescribeInstanceStatus"), ("ec2", "DescribeImages"),
        ("ec2", "DescribeLaunchTemplates"), ("ec2", "DescribeLaunchTemplateVersions"),
        ("elbv2", "DescribeTargetGroups"), ("autoscaling", "DescribeAutoScalingGroups"),
    }
    if key not in interesting:
        return None
    hidden = hidden_keys(context)
    if not hidden:
        return None

    def keep(items, predicate):
        kept = [i for i in items or [] if predicate(i)]
        return kept, len(kept) != len(items or [])

    changed = False
    result = dict(response)
    if key == ("ec2", "DescribeInstances") and not request.get("InstanceIds"):
        reservations = []
        for reservation in response.get("Reservations") or []:
            instances, dropped = keep(
                reservation.get("Instances"), lambda i: ("instance", i["InstanceId"]) not in hidden
            )
            changed |= dropped
            if instances:
                reservations.append({**reservation, "Instances": instances})
        result["Reservations"] = reservations
    elif key == ("ec2", "DescribeInstanceStatus") and not request.get("InstanceIds"):
        result["InstanceStatuses"], changed = keep(
            response.get("InstanceStatuses"), lambda s: ("instance", s["InstanceId"]) not in hidden
        )
    elif key == ("ec2", "DescribeImages") and not request.get("ImageIds"):
        result["Images"], changed = keep(response.get("Images"), lambda i: ("image", i["ImageId"]) not in hidden)
    elif key == ("ec2", "DescribeLaunchTemplates") and not (
        request.get("LaunchTemplateIds") or request.get("LaunchTemplateNames")
    ):
        result["LaunchTemplates"], changed = keep(
            response.get("LaunchTemplates"), lambda t: ("lt-id", t["LaunchTemplateId"]) not in hidden
        )
    elif key == ("ec2", "DescribeLaunchTemplateVersions") and not request.get("Versions"):
        result["LaunchTemplateVersions"], changed = keep(
            response.get("LaunchTemplateVersions"),
            lambda v: ("lt-version", f"{v['LaunchTemplateId']}:{v['VersionNumber']}") not in hidden,
        )
    elif key == ("elbv2", "DescribeTargetGroups") and not (
        request.get("TargetGroupArns") or request.get("Names")
    ):
        result["TargetGroups"], changed = keep(
            response.get("TargetGroups"), lambda g: ("tg", g["TargetGroupArn"]) not in hidden
        )
    elif key == ("autoscaling", "DescribeAutoScalingGroups"):
        result["AutoScalingGroups"], changed = keep(
            response.get("AutoScalingGroups"), lambda g: ("asg", g["AutoScalingGroupName"]) not in hidden
        )
    return result if changed else None


@hooks.on_infra_start()
def immune_model_propagation() -> None:
    add_request_handler(on_request)
    add_response_handler(on_response)
