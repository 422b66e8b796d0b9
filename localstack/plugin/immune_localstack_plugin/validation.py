"""Names and tags AWS refuses, refused here too (moto accepts most of them).

| request | rule | error | AWS page |
| --- | --- | --- | --- |
| ELBv2 Tags (CreateLoadBalancer, CreateTargetGroup, CreateListener, CreateRule, AddTags) | key 1-128, value 0-256 characters, both `^([\\p{L}\\p{Z}\\p{N}_.:/=+\\-@]*)$` | ValidationError | https://docs.aws.amazon.com/elasticloadbalancing/latest/APIReference/API_Tag.html |
| CreateImage / RegisterImage / CopyImage Name | 3-128 letters, digits, ( ) [ ] space . / - ' @ _ | InvalidAMIName.Malformed | https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_CreateImage.html, https://docs.aws.amazon.com/AWSEC2/latest/APIReference/errors-overview.html |
| CreateLaunchTemplate LaunchTemplateName | 3-128 letters, digits, ( ) . - / _ | InvalidLaunchTemplateName.MalformedException | https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_CreateLaunchTemplate.html, errors-overview |
| EC2 tags (CreateTags, any TagSpecifications) | key at most 128, value at most 256 characters, key not starting with aws: | InvalidParameterValue | https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/Using_Tags.html#tag-restrictions |
| CreateAutoScalingGroup AutoScalingGroupName | 1-255 characters | ValidationError | https://docs.aws.amazon.com/autoscaling/ec2/APIReference/API_CreateAutoScalingGroup.html |

Target group names (at most 32 alphanumerics or hyphens, no hyphen at either end) were
already refused by moto with ValidationError, as CreateTargetGroup documents.
"""

import re
import unicodedata

from localstack.runtime import hooks

from .gateway import add_request_handler, operation_of, refuse

ELB_TAG_PATTERN = r"^([\p{L}\p{Z}\p{N}_.:/=+\-@]*)$"
ELB_TAGGED = {"CreateLoadBalancer", "CreateTargetGroup", "CreateListener", "CreateRule", "AddTags"}
IMAGE_NAME = re.compile(r"^[A-Za-z0-9()\[\] ./\-'@_]{3,128}$")
LAUNCH_TEMPLATE_NAME = re.compile(r"^[A-Za-z0-9().\-/_]{3,128}$")


def _elb_tag_char(c: str) -> bool:
    """\\p{L}, \\p{Z}, \\p{N} or one of _.:/=+-@ (Python's re has no \\p{...})."""
    return unicodedata.category(c)[0] in "LZN" or c in "_.:/=+-@"


def _length_error(value: str, where: str, low: int, high: int) -> None:
    if len(value) > high:
        refuse("ValidationError", f"1 validation error detected: Value '{value}' at '{where}' failed to "
               f"satisfy constraint: Member must have length less than or equal to {high}")
    if len(value) < low:
        refuse("ValidationError", f"1 validation error detected: Value '{value}' at '{where}' failed to "
               f"satisfy constraint: Member must have length greater than or equal to {low}")


def check_elb_tags(tags) -> None:
    for index, tag in enumerate(tags or [], start=1):
        for field, high, low in (("key", 128, 1), ("value", 256, 0)):
            value = tag.get(field.capitalize())
            if value is None:
                continue
            where = f"tags.{index}.member.{field}"
            _length_error(value, where, low, high)
            if not all(_elb_tag_char(c) for c in value):
                refuse("ValidationError", f"1 validation error detected: Value '{value}' at '{where}' failed "
                       f"to satisfy constraint: Member must satisfy regular expression pattern: {ELB_TAG_PATTERN}")


def check_ec2_tags(tags) -> None:
    for tag in tags or []:
        key, value = tag.get("Key") or "", tag.get("Value") or ""
        if key.lower().startswith("aws:"):
            refuse("InvalidParameterValue", "Tag keys starting with 'aws:' are reserved for internal use")
        if len(key) > 128:
            refuse("InvalidParameterValue", "Tag key exceeds the maximum length of 128 characters")
        if len(value) > 256:
            refuse("InvalidParameterValue", "Tag value exceeds the maximum length of 256 characters")


def on_request(context) -> None:
    if context.is_internal_call:  # LocalStack's own requests (its tags may be aws:...)
        return
    service, operation = operation_of(context)
    request = context.service_request
    if service == "elbv2":
        if operation in ELB_TAGGED:
            check_elb_tags(request.get("Tags"))
    elif service == "ec2":
        if operation == "CreateTags":
            check_ec2_tags(request.get("Tags"))
        for spec in request.get("TagSpecifications") or []:
            check_ec2_tags(spec.get("Tags"))
        if operation in ("CreateImage", "RegisterImage", "CopyImage"):
            name = request.get("Name")
            if name is not None and not IMAGE_NAME.match(name):
                refuse("InvalidAMIName.Malformed",
                       "AMI names must be between 3 and 128 characters long, and may contain letters, numbers, "
                       "'(', ')', '[', ']', ' ', '.', '/', '-', ''', '@' and '_'")
        elif operation == "CreateLaunchTemplate":
            name = request.get("LaunchTemplateName")
            if name is not None and not LAUNCH_TEMPLATE_NAME.match(name):
                refuse("InvalidLaunchTemplateName.MalformedException",
                       "A launch template name must be between 3 and 128 characters, and may contain letters, "
                       "numbers, and the following characters: - ( ) . / _.'")
    elif service == "autoscaling":
        if operation == "CreateAutoScalingGroup":
            _length_error(request.get("AutoScalingGroupName") or "", "autoScalingGroupName", 1, 255)


@hooks.on_infra_start()
def immune_model_validation() -> None:
    add_request_handler(on_request)
