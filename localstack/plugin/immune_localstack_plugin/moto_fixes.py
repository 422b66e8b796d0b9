"""Fixes to the moto inside LocalStack for the image, launch-template and Auto
Scaling calls immune makes.

Applied once at LocalStack start (entry points in localstack.hooks.on_infra_start),
before any request is served. Each fix is for a gap seen with localstack-core
2026.3.0 / moto-ext; see ../../README.md. Without them:

- CreateImage with TagSpecifications for ResourceType "snapshot" is a 501
  InternalFailure (moto raises NotImplementedError); image tags work.
- CreateLaunchTemplateVersion keeps UserData as a plain str, and an Auto Scaling
  group launching from that version fails with 500 InternalError (an assert in
  moto's LaunchTemplateVersion.user_data). Version 1 (CreateLaunchTemplate) is fine.
- CreateLaunchTemplateVersion ignores SourceVersion: the new version holds only
  the fields given, not the source's fields overridden by them.
- DeleteLaunchTemplateVersions is not implemented (501 InternalFailure).
- CreateAutoScalingGroup with a name in use silently replaces the group (its
  instances are orphaned) where AWS answers AlreadyExists.
- A group's instances are launched from the template's default version for
  everything but image, type, user data and security groups: instance tags from
  the template (and aws:ec2launchtemplate:version) come from the default version,
  and DescribeAutoScalingGroups shows the default version on every instance.
- DeleteAutoScalingGroup of an unknown name is a 500 (which SDKs retry for
  seconds) where AWS answers ValidationError; without ForceDelete it deletes a
  group that still has instances where AWS answers ResourceInUse.
- Instances a group terminates itself (scale-in, group deleted) stay registered,
  and "healthy", in its target groups; an instance launched to replace one
  terminated through EC2 is not registered at all.
- RunInstances with an instance profile made through LocalStack's IAM is NoSuchEntity.
- A tag filter on DescribeInstances or DescribeImages costs the square of the tags in
  the account (each resource's tags are found by scanning them all).
- DescribeImages filtered by image-id or name runs fnmatch for every image of the
  region against every value.
- DescribeAlarms answers every alarm in one page, where AWS answers 50 (MaxRecords,
  at most 100) and a NextToken; it answers composite alarms without AlarmTypes and
  applies only one of its filters. DescribeAlarmHistory ignores AlarmTypes (AWS
  answers metric alarms' items only when it is omitted).
"""

import contextvars
import copy

from localstack.runtime import hooks


@hooks.on_infra_start()
def immune_fix_moto_create_image() -> None:
    from moto.ec2.models.amis import AmiBackend

    original_create_image = AmiBackend.create_image

    def create_image(self, instance_id, name, description, tag_specifications):
        snapshot_tags = {
            tag["Key"]: tag["Value"]
            for spec in tag_specifications
            if spec["ResourceType"] == "snapshot"
            for tag in spec["Tags"]
        }
        others = [spec for spec in tag_specifications if spec["ResourceType"] != "snapshot"]
        image = original_create_image(self, instance_id, name, description, others)
        if snapshot_tags:
            self.create_tags([image.ebs_snapshot.id], snapshot_tags)
        return image

    AmiBackend.create_image = create_image


@hooks.on_infra_start()
def immune_fix_moto_launch_templates() -> None:
    from moto.core.responses import ActionResult
    from moto.ec2.exceptions import InvalidLaunchTemplateVersionNotFound
    from moto.ec2.models.launch_templates import LaunchTemplate, LaunchTemplateBackend
    from moto.ec2.responses.launch_templates import LaunchTemplates
    from moto.ec2.utils import parse_user_data

    # Deleted versions stay in moto's list (it finds version N at index N-1, and
    # numbers are never reused, as in AWS) and are only hidden.
    def deleted(template: LaunchTemplate) -> set:
        return template.__dict__.setdefault("_immune_deleted_versions", set())

    original_get_version = LaunchTemplate.get_version

    def get_version(self, num):
        if str(num).lower() == "$latest":
            live = [v for v in self.versions if v.number not in deleted(self)]
            return live[-1]  # the default version can't be deleted, so one is left
        version = original_get_version(self, num)
        if version.number in deleted(self):
            raise InvalidLaunchTemplateVersionNotFound(template_id=self.id, version=num)
        return version

    LaunchTemplate.get_version = get_version

    original_describe_versions = LaunchTemplateBackend.describe_launch_template_versions

    def describe_launch_template_versions(self, *args, **kwargs):
        found = original_describe_versions(self, *args, **kwargs)
        return [(t, v) for t, v in found if v.number not in deleted(t)]

    LaunchTemplateBackend.describe_launch_template_versions = describe_launch_template_versions

    def template_from_request(response):
        name = response._get_param("LaunchTemplateName")
        if name:
            return response.ec2_backend.get_launch_template_by_name(name)
        return response.ec2_backend.get_launch_template(response._get_param("LaunchTemplateId"))

    # Replaces moto's version of this action (same result shape).
    def create_launch_template_version(self) -> ActionResult:
        template = template_from_request(self)
        data = self._get_param("LaunchTemplateData", {})
        data["UserData"] = parse_user_data(data.get("UserData"))
        source = self._get_param("SourceVersion")
        if source:
            # AWS: the new version is the source version with the given fields on top.
            merged = copy.deepcopy(template.get_version(source).data)
            merged.update({k: v for k, v in data.items() if v is not None})
            data = merged
        self.error_on_dryrun()
        version = template.create_version(data, self._get_param("VersionDescription"))
        return ActionResult(
            {
                "LaunchTemplateVersion": {
                    "CreateTime": version.create_time,
                    "CreatedBy": f"arn:{self.partition}:iam::{self.current_account}:root",
                    "DefaultVersion": template.is_default(version),
                    "LaunchTemplateData": version.data,
                    "LaunchTemplateId": template.id,
                    "LaunchTemplateName": template.name,
                    "VersionDescription": version.description,
                    "VersionNumber": version.number,
                }
            }
        )

    def delete_launch_template_versions(self) -> ActionResult:
        template = template_from_request(self)
        self.error_on_dryrun()
        ok, failed = [], []
        for requested in self._get_param("Versions", []):
            item = {"LaunchTemplateId": template.id, "LaunchTemplateName": template.name}
            number = int(requested) if str(requested).isdigit() else 0
            if not 1 <= number <= len(template.versions) or number in deleted(template):
                error = {
                    "Code": "launchTemplateVersionDoesNotExist",
                    "Message": f"The specified launch template version {requested} does not exist.",
                }
            elif number == template.default_version_number:
                error = {
                    "Code": "unexpectedError",
                    "Message": "Cannot delete the default version of a launch template.",
                }
            else:
                deleted(template).add(number)
                ok.append({**item, "VersionNumber": number})
                continue
            failed.append({**item, "VersionNumber": number, "ResponseError": error})
        return ActionResult(
            {
                "SuccessfullyDeletedLaunchTemplateVersions": ok,
                "UnsuccessfullyDeletedLaunchTemplateVersions": failed,
            }
        )

    LaunchTemplates.create_launch_template_version = create_launch_template_version
    LaunchTemplates.delete_launch_template_versions = delete_launch_template_versions


@hooks.on_infra_start()
def immune_fix_moto_autoscaling() -> None:
    from moto.autoscaling.exceptions import AutoscalingClientError
    from moto.autoscaling.models import AutoScalingBackend, FakeAutoScalingGroup, InstanceState
    from moto.ec2.models.instances import InstanceBackend

    class AlreadyExists(AutoscalingClientError):
        code = "AlreadyExists"

    original_create = AutoScalingBackend.create_auto_scaling_group

    def create_auto_scaling_group(self, name, *args, **kwargs):
        if name in self.autoscaling_groups:
            raise AlreadyExists(
                f"AutoScalingGroup by this name already exists - A group with the name {name} already exists"
            )
        return original_create(self, name, *args, **kwargs)

    AutoScalingBackend.create_auto_scaling_group = create_auto_scaling_group

    # moto's group launches with {"LaunchTemplateId": ...} and no version, so EC2
    # falls back to the default version. While a group launches, supply its version.
    launching_version = contextvars.ContextVar("immune_launching_version", default=None)
    original_replace = FakeAutoScalingGroup.replace_autoscaling_group_instances

    def replace_autoscaling_group_instances(self, *args, **kwargs):
        if self.ec2_launch_template is None:
            return original_replace(self, *args, **kwargs)
        number = self.ec2_launch_template.get_version(self.launch_template_version).number
        token = launching_version.set(str(number))
        try:
            return original_replace(self, *args, **kwargs)
        finally:
            launching_version.reset(token)
            for state in self.instance_states:  # the new ones remember their version
                state.__dict__.setdefault("_immune_launch_template_version", str(number))

    FakeAutoScalingGroup.replace_autoscaling_group_instances = replace_autoscaling_group_instances

    original_template_from_args = InstanceBackend._get_template_from_args

    def _get_template_from_args(self, launch_template_arg):
        version = launching_version.get()
        if version is not None and "Version" not in launch_template_arg:
            launch_template_arg = {**launch_template_arg, "Version": version}
        return original_template_from_args(self, launch_template_arg)

    InstanceBackend._get_template_from_args = _get_template_from_args

    original_instance_template = InstanceState.launch_template

    @property
    def launch_template(self):
        template = original_instance_template.fget(self)
        version = self.__dict__.get("_immune_launch_template_version")
        if template is not None and version is not None:
            template["Version"] = version
        return template

    InstanceState.launch_template = launch_template


@hooks.on_infra_start()
def immune_fix_moto_group_lifecycle() -> None:
    from moto.autoscaling.exceptions import AutoscalingClientError, ValidationError
    from moto.autoscaling.models import AutoScalingBackend
    from moto.autoscaling.responses import AutoScalingResponse
    from moto.ec2.models.instances import InstanceBackend
    from moto.elbv2 import elbv2_backends

    class ResourceInUse(AutoscalingClientError):
        code = "ResourceInUse"

    original_delete = AutoScalingResponse.delete_auto_scaling_group

    def delete_auto_scaling_group(self):
        name = self._get_param("AutoScalingGroupName")
        group = self.autoscaling_backend.autoscaling_groups.get(name)
        if group is None:
            raise ValidationError(f"AutoScalingGroup name not found - AutoScalingGroup '{name}' not found")
        if group.instance_states and not self._get_bool_param("ForceDelete", False):
            raise ResourceInUse(
                "You cannot delete an AutoScalingGroup while there are instances or pending "
                "Spot instance request(s) still in the group."
            )
        return original_delete(self)

    AutoScalingResponse.delete_auto_scaling_group = delete_auto_scaling_group

    # moto tells ELBv2 about terminations only in the TerminateInstances API
    # handler; doing it in the model covers the group's own terminations too.
    # Terminated targets then drop out of DescribeTargetHealth (or read "draining"
    # when asked for by id), as they do on AWS once deregistered.
    original_terminate = InstanceBackend.terminate_instances

    def terminate_instances(self, instance_ids):
        result = original_terminate(self, instance_ids)
        ids = [instance.id for instance, _ in result]
        elbv2_backends[self.account_id][self.region_name].notify_terminate_instances(ids)
        return result

    InstanceBackend.terminate_instances = terminate_instances

    original_notify = AutoScalingBackend.notify_terminate_instances

    # The replacements are registered for the groups that lost an instance only, and
    # only running instances: registering every group's instances failed an unrelated
    # TerminateInstances (a builder's, say) with InvalidTarget whenever another group
    # held an instance on its way out (a termination lifecycle hook's wait).
    def notify_terminate_instances(self, instance_ids):
        lost = [
            name
            for name, group in self.autoscaling_groups.items()
            if any(state.instance.id in instance_ids for state in group.instance_states)
        ]
        original_notify(self, instance_ids)
        for name in lost:
            group = self.autoscaling_groups.get(name)
            if group is None or not group.target_group_arns:
                continue
            running = [
                state.instance.id
                for state in group.instance_states
                if state.instance.state == "running"
            ]
            for target_group in self.elbv2_backend.describe_target_groups(
                target_group_arns=group.target_group_arns, load_balancer_arn=None, names=None
            ):
                self.elbv2_backend.register_targets(
                    target_group.arn, [{"Id": i, "Port": target_group.port} for i in running]
                )

    AutoScalingBackend.notify_terminate_instances = notify_terminate_instances


@hooks.on_infra_start()
def immune_fix_cloudwatch_alarm_history() -> None:
    """DescribeAlarmHistory (LocalStack's own CloudWatch, not moto) is wrong four ways:
    a history item is stamped with the time the *previous* state began instead of the
    time of the change; stamps are naive local times, so comparing them with a
    request's StartDate (which arrives with a time zone) fails with a 500 ("can't
    compare offset-naive and offset-aware datetimes"); HistoryItemType is ignored; and
    so is AlarmTypes, where AWS answers metric alarms' items only when it is omitted
    ("If you omit this parameter, only metric alarms are returned",
    https://docs.aws.amazon.com/AmazonCloudWatch/latest/APIReference/API_DescribeAlarmHistory.html).
    Items are stamped with the change's time in UTC, and the filters applied here. An
    alarm's StateUpdatedTimestamp is kept in UTC too (it was a naive local time)."""
    import datetime

    from localstack.services.cloudwatch.provider_v2 import CloudwatchProvider

    original_update = CloudwatchProvider._update_state

    def utc(date):
        if date is None:
            return None
        if date.tzinfo is None:
            return date.astimezone(datetime.timezone.utc)
        return date

    def _update_state(self, context, alarm, *args, **kwargs):
        store = self.get_store(context.account_id, context.region)
        before = len(store.histories)
        result = original_update(self, context, alarm, *args, **kwargs)
        alarm.alarm["StateUpdatedTimestamp"] = utc(alarm.alarm["StateUpdatedTimestamp"])
        for item in store.histories[before:]:
            item["Timestamp"] = alarm.alarm["StateUpdatedTimestamp"]
        return result

    def describe_alarm_history(self, context, alarm_name=None, alarm_contributor_id=None,
                               alarm_types=None, history_item_type=None, start_date=None,
                               end_date=None, max_records=None, next_token=None,
                               scan_by=None, **kwargs):
        store = self.get_store(context.account_id, context.region)
        start, end = utc(start_date), utc(end_date)
        types = set(alarm_types or ["MetricAlarm"])
        items = []
        for item in store.histories:
            stamp = utc(item.get("Timestamp"))
            if alarm_name and item.get("AlarmName") != alarm_name:
                continue
            if item.get("AlarmType", "MetricAlarm") not in types:
                continue
            if history_item_type and item.get("HistoryItemType") != history_item_type:
                continue
            if start and (stamp is None or stamp < start):
                continue
            if end and (stamp is None or stamp > end):
                continue
            items.append({**item, "Timestamp": stamp})
        return {"AlarmHistoryItems": items}

    CloudwatchProvider._update_state = _update_state
    CloudwatchProvider.describe_alarm_history = describe_alarm_history


@hooks.on_infra_start()
def immune_fix_ec2_instance_profiles() -> None:
    """RunInstances with IamInstanceProfile looks the profile up in moto's IAM, but
    LocalStack's IAM keeps its own store: every profile made through the API is "not
    found" (NoSuchEntity). Look in LocalStack's store when moto's has none."""
    from types import SimpleNamespace

    import moto.ec2.models.iam_instance_profile as ec2_profiles
    import moto.ec2.responses.instances as ec2_instances
    from localstack.services.iam.models import iam_stores

    original = ec2_profiles.filter_iam_instance_profiles

    def from_localstack(account_id, name, arn):
        for _region, store in iam_stores[account_id].items():
            for entity in store.INSTANCE_PROFILES.values():
                profile = entity.instance_profile
                if (name and profile["InstanceProfileName"] == name) or (arn and profile["Arn"] == arn):
                    return SimpleNamespace(
                        name=profile["InstanceProfileName"],
                        arn=profile["Arn"],
                        id=profile["InstanceProfileId"],
                    )
        return None

    def filter_iam_instance_profiles(account_id, partition, iam_instance_profile_arn, iam_instance_profile_name):
        try:
            return original(account_id, partition, iam_instance_profile_arn, iam_instance_profile_name)
        except Exception:
            found = from_localstack(account_id, iam_instance_profile_name, iam_instance_profile_arn)
            if found is None:
                raise
            return found

    ec2_profiles.filter_iam_instance_profiles = filter_iam_instance_profiles
    ec2_instances.filter_iam_instance_profiles = filter_iam_instance_profiles


@hooks.on_infra_start()
def immune_fix_ec2_tag_lookup() -> None:
    """moto finds one resource's tags by scanning every tag of the account with a regex
    per tag (TagBackend.describe_tags filtered by resource-id), and does it for each
    resource a tag filter looks at: DescribeInstances or DescribeImages filtered by tags
    cost the square of what the account holds. A hundred fleets made a call take seconds
    and most of LocalStack's time. AWS answers these from an index; so does this, from
    the backend's own map of tags by resource id. Same answers: the scan's resource-id
    pattern is an exact match (fnmatch.translate, anchored), ids hold no wildcards."""
    from moto.ec2.models.core import TaggedEC2Resource
    from moto.ec2.utils import EC2_PREFIX_TO_RESOURCE, get_prefix

    def get_tags(self):
        resource_id = getattr(self, "id", None)
        if not resource_id:
            return []
        # .get: the map is a defaultdict, and a lookup must not add an entry.
        tags = self.ec2_backend.tags.get(resource_id) or {}
        kind = EC2_PREFIX_TO_RESOURCE.get(get_prefix(resource_id), "")
        return [
            {"resource_id": resource_id, "key": key, "value": value, "resource_type": kind}
            for key, value in tags.items()
        ]

    TaggedEC2Resource.get_tags = get_tags


@hooks.on_infra_start()
def immune_fix_ec2_image_filters() -> None:
    """DescribeImages filtered by image-id or name matches every image of the region
    (moto's catalogue of public images included) against every value with fnmatch: a
    plan asking for a hundred fleets' images by id spent most of its LocalStack time
    there. Literal values (no *, ? or [) match only equal strings, so those images are
    picked by a set lookup first and the filter runs on them alone: the same images,
    in the same order."""
    from moto.ec2.models.amis import AmiBackend

    original = AmiBackend.describe_images
    attribute = {"image-id": "id", "name": "name"}

    def literal(values) -> bool:
        return isinstance(values, list) and all(
            isinstance(v, str) and not any(c in v for c in "*?[") for v in values
        )

    def describe_images(self, ami_ids=None, filters=None, exec_users=None, owners=None):
        narrowed = {
            key: set(values)
            for key, values in (filters or {}).items()
            if key in attribute and literal(values)
        }
        if ami_ids or not narrowed:
            return original(self, ami_ids, filters, exec_users, owners)
        # The narrowing filters are applied here; the others by moto.
        rest = {k: v for k, v in filters.items() if k not in narrowed}
        images = original(self, ami_ids, rest, exec_users, owners)
        return [
            image
            for image in images
            if all(getattr(image, attribute[k]) in wanted for k, wanted in narrowed.items())
        ]

    AmiBackend.describe_images = describe_images


@hooks.on_infra_start()
def immune_fix_cloudwatch_alarm_pages() -> None:
    """DescribeAlarms (LocalStack's own CloudWatch) answers every alarm in one page and
    ignores MaxRecords and NextToken ("TODO: Pagination"). AWS answers at most
    MaxRecords (1 to 100, 50 by default) alarms a page, with a NextToken for the rest: a
    caller that reads one page sees up to 50 of a hundred fleets' alarms, and here it
    would not notice. Pages are cut from the alarms sorted by name, as AWS lists them.

    It also answers composite alarms when AlarmTypes is omitted, where AWS answers
    metric alarms only ("If you omit this parameter, only metric alarms are returned",
    https://docs.aws.amazon.com/AmazonCloudWatch/latest/APIReference/API_DescribeAlarms.html),
    and applies only one of its filters (names, prefix, state, action prefix; the first
    given). Here AlarmTypes selects the types, every filter given applies, and
    ChildrenOfAlarmName / ParentsOfAlarmName select a composite alarm's children or an
    alarm's composite parents."""
    from localstack.aws.api import CommonServiceException
    from localstack.services.cloudwatch.provider_v2 import CloudwatchProvider

    from .alarms import RuleError, alarm_name, names_in, parse

    def children_of(alarm) -> set:
        try:
            return {alarm_name(n) for n in names_in(parse(alarm.get("AlarmRule") or ""))}
        except RuleError:
            return set()

    def describe_alarms(self, context, alarm_names=None, alarm_name_prefix=None, alarm_types=None,
                        children_of_alarm_name=None, parents_of_alarm_name=None, state_value=None,
                        action_prefix=None, max_records=None, next_token=None, **kwargs):
        if max_records is not None and not 1 <= max_records <= 100:
            raise CommonServiceException(
                "ValidationError",
                f"1 validation error detected: Value '{max_records}' at 'maxRecords' "
                "failed to satisfy constraint: Member must have value between 1 and 100",
            )
        store = self.get_store(context.account_id, context.region)
        alarms = [a.alarm for a in store.alarms.values()]
        by_name = {a["AlarmName"]: a for a in alarms}
        types = set(alarm_types or ["MetricAlarm"])
        if children_of_alarm_name:
            parent = by_name.get(children_of_alarm_name)
            wanted = children_of(parent) if parent and parent.get("AlarmRule") else set()
            alarms = [a for a in alarms if a["AlarmName"] in wanted]
        if parents_of_alarm_name:
            alarms = [a for a in alarms if a.get("AlarmRule") and parents_of_alarm_name in children_of(a)]
        if alarm_names:
            alarms = [a for a in alarms if a["AlarmName"] in alarm_names]
        if alarm_name_prefix:
            alarms = [a for a in alarms if a["AlarmName"].startswith(alarm_name_prefix)]
        if state_value:
            alarms = [a for a in alarms if a.get("StateValue") == state_value]
        if action_prefix:
            alarms = [
                a for a in alarms
                if any(action.startswith(action_prefix) for action in a.get("AlarmActions") or [])
            ]
        alarms = [
            a for a in alarms
            if ("CompositeAlarm" if a.get("AlarmRule") is not None else "MetricAlarm") in types
        ]
        alarms.sort(key=lambda a: a["AlarmName"])
        start = 0
        if next_token:
            try:
                start = int(next_token)
            except ValueError:
                raise CommonServiceException("InvalidNextToken", "The next token is invalid")
        size = max_records or 50
        page = alarms[start : start + size]
        result = {
            "MetricAlarms": [a for a in page if a.get("AlarmRule") is None],
            "CompositeAlarms": [a for a in page if a.get("AlarmRule") is not None],
        }
        if start + size < len(alarms):
            result["NextToken"] = str(start + size)
        return result

    CloudwatchProvider.describe_alarms = describe_alarms
