"""Listener and rule actions as ELBv2 checks them.

- A forward action of an Application Load Balancer names at most 5 target groups
  ("Target groups per action: 5",
  https://docs.aws.amazon.com/elasticloadbalancing/latest/application/load-balancer-limits.html)
  and each weight is 0 to 999 ("The weight. The range is 0 to 999",
  https://docs.aws.amazon.com/elasticloadbalancing/latest/APIReference/API_TargetGroupTuple.html);
  otherwise CreateListener, ModifyListener, CreateRule and ModifyRule answer
  ValidationError. moto accepted any number and any weight.
- ModifyListener's actions are checked as CreateListener's are (a forward to a target
  group that does not exist: TargetGroupNotFound); moto stored them unchecked.

What moto already did as AWS does, and is left alone: ModifyListener and ModifyRule
replace the whole action list ("DefaultActions: The actions for the default rule",
https://docs.aws.amazon.com/elasticloadbalancing/latest/APIReference/API_ModifyListener.html),
authenticate-oidc / authenticate-cognito actions with Order and a forward's
TargetGroupStickinessConfig are stored and returned as given; DeleteTargetGroup of a
group a listener or rule forwards to answers ResourceInUse
(https://docs.aws.amazon.com/elasticloadbalancing/latest/APIReference/API_DeleteTargetGroup.html).
"""

from localstack.runtime import hooks

MAX_TARGET_GROUPS = 5
MAX_WEIGHT = 999


def check_forwards(actions, load_balancer_type, where: str) -> None:
    from moto.elbv2.exceptions import ValidationError

    for index, action in enumerate(actions or [], start=1):
        data = getattr(action, "data", action)
        if not isinstance(data, dict) or data.get("Type") != "forward":
            continue
        groups = (data.get("ForwardConfig") or {}).get("TargetGroups") or []
        if load_balancer_type in (None, "application") and len(groups) > MAX_TARGET_GROUPS:
            raise ValidationError(
                f"You cannot specify more than {MAX_TARGET_GROUPS} target groups in a forward action "
                f"({where}.{index}.member.forwardConfig.targetGroups has {len(groups)})"
            )
        for group in groups:
            weight = group.get("Weight")
            if weight is None:
                continue
            try:
                weight = int(weight)
            except (TypeError, ValueError):
                raise ValidationError(f"Target group weight '{group.get('Weight')}' is not a number")
            if not 0 <= weight <= MAX_WEIGHT:
                raise ValidationError(
                    f"Target group weight '{weight}' must be between 0 and {MAX_WEIGHT} "
                    f"({where}.{index}.member.forwardConfig.targetGroups)"
                )


@hooks.on_infra_start()
def immune_model_listener_actions() -> None:
    from moto.elbv2.models import ELBv2Backend, FakeAction

    def type_of_balancer(backend, load_balancer_arn):
        balancer = backend.load_balancers.get(load_balancer_arn)
        return getattr(balancer, "type", None) if balancer else None

    def type_of_listener(backend, listener_arn):
        for balancer in backend.load_balancers.values():
            if listener_arn in balancer.listeners:
                return getattr(balancer, "type", None)
        return None

    def type_of_rule(backend, rule_arn):
        for balancer in backend.load_balancers.values():
            for listener in balancer.listeners.values():
                if rule_arn in listener.rules:
                    return getattr(balancer, "type", None)
        return None

    original_create_listener = ELBv2Backend.create_listener

    def create_listener(self, load_balancer_arn, protocol, port, ssl_policy, certificate, actions, *args, **kwargs):
        check_forwards(actions, type_of_balancer(self, load_balancer_arn), "defaultActions")
        return original_create_listener(
            self, load_balancer_arn, protocol, port, ssl_policy, certificate, actions, *args, **kwargs
        )

    ELBv2Backend.create_listener = create_listener

    original_modify_listener = ELBv2Backend.modify_listener

    def modify_listener(self, arn, port=None, protocol=None, ssl_policy=None, certificates=None, actions=None):
        if actions:
            check_forwards(actions, type_of_listener(self, arn), "defaultActions")
            self._validate_actions([FakeAction(action) for action in actions])
        return original_modify_listener(self, arn, port, protocol, ssl_policy, certificates, actions)

    ELBv2Backend.modify_listener = modify_listener

    original_create_rule = ELBv2Backend.create_rule

    def create_rule(self, listener_arn, conditions, priority, actions, *args, **kwargs):
        check_forwards(actions, type_of_listener(self, listener_arn), "actions")
        return original_create_rule(self, listener_arn, conditions, priority, actions, *args, **kwargs)

    ELBv2Backend.create_rule = create_rule

    original_modify_rule = ELBv2Backend.modify_rule

    def modify_rule(self, rule_arn, conditions, actions):
        check_forwards(actions, type_of_rule(self, rule_arn), "actions")
        return original_modify_rule(self, rule_arn, conditions, actions)

    ELBv2Backend.modify_rule = modify_rule
