"""Composite alarms that follow their rule (LocalStack's own CloudWatch evaluates only
`ALARM(arn) OR ALARM(arn)`, and re-evaluates every composite alarm on any change, so
SetAlarmState on a composite alarm was undone at once).

AWS pages followed:
- PutCompositeAlarm (AlarmRule: ALARM(), OK(), INSUFFICIENT_DATA() of an alarm name or
  ARN, quoted or not, TRUE, FALSE, AND, OR, NOT, parentheses; "When this operation
  creates an alarm, the alarm state is immediately set to INSUFFICIENT_DATA. The alarm
  is then evaluated and its state is set appropriately"):
  https://docs.aws.amazon.com/AmazonCloudWatch/latest/APIReference/API_PutCompositeAlarm.html
- SetAlarmState ("the composite alarm is not guaranteed to return to its actual state.
  It returns to its actual state only once any of its children alarms change state"):
  https://docs.aws.amazon.com/AmazonCloudWatch/latest/APIReference/API_SetAlarmState.html

A composite alarm is ALARM when its rule is true, else OK. It is evaluated when it is
created or updated, and whenever an alarm its rule names changes state (SetAlarmState,
LocalStack's own metric evaluation, a PutMetricAlarm that resets it, or a nested
composite alarm changing). A change sets StateValue, StateReason, StateReasonData,
StateUpdatedTimestamp and StateTransitionedTimestamp and writes a StateUpdate history
item with AlarmType CompositeAlarm. A rule naming an alarm that does not exist treats
its functions as false. A rule that does not parse: ValidationError.

Which alarms DescribeAlarms and DescribeAlarmHistory answer by AlarmTypes is in
moto_fixes.py (with their paging and filters).
"""

import datetime
import re

from localstack.runtime import hooks

TOKEN = re.compile(
    r"""\s*(?:
        (?P<open>\() | (?P<close>\)) |
        (?P<function>ALARM|OK|INSUFFICIENT_DATA)\s*\(\s*(?:"(?P<quoted>[^"]*)"|(?P<bare>[^)]*?))\s*\) |
        (?P<word>AND|OR|NOT|TRUE|FALSE)\b
    )""",
    re.VERBOSE,
)
STATES = {"ALARM": "ALARM", "OK": "OK", "INSUFFICIENT_DATA": "INSUFFICIENT_DATA"}


class RuleError(ValueError):
    pass


def tokenize(rule: str) -> list[tuple]:
    tokens, at = [], 0
    rule = rule.rstrip()
    while at < len(rule):
        match = TOKEN.match(rule, at)
        if not match or match.end() == at:
            raise RuleError(f"unexpected text at position {at}: {rule[at:at + 20]!r}")
        at = match.end()
        if match.group("open"):
            tokens.append(("(",))
        elif match.group("close"):
            tokens.append((")",))
        elif match.group("function"):
            name = match.group("quoted") if match.group("quoted") is not None else match.group("bare")
            if not name:
                raise RuleError(f"{match.group('function')}() names no alarm")
            tokens.append(("fn", match.group("function"), name.strip()))
        else:
            tokens.append((match.group("word"),))
    return tokens


def parse(rule: str):
    """The rule as a tree: ("fn", STATE, alarm) | ("const", bool) | ("not", x) |
    ("and", x, y) | ("or", x, y). NOT binds tighter than AND, AND tighter than OR."""
    tokens = tokenize(rule)
    at = 0

    def peek():
        return tokens[at][0] if at < len(tokens) else None

    def take():
        nonlocal at
        at += 1
        return tokens[at - 1]

    def disjunction():
        left = conjunction()
        while peek() == "OR":
            take()
            left = ("or", left, conjunction())
        return left

    def conjunction():
        left = negation()
        while peek() == "AND":
            take()
            left = ("and", left, negation())
        return left

    def negation():
        if peek() == "NOT":
            take()
            return ("not", negation())
        return atom()

    def atom():
        kind = peek()
        if kind == "(":
            take()
            inner = disjunction()
            if peek() != ")":
                raise RuleError("missing )")
            take()
            return inner
        if kind in ("TRUE", "FALSE"):
            take()
            return ("const", kind == "TRUE")
        if kind == "fn":
            _, state, name = take()
            return ("fn", state, name)
        raise RuleError(f"expected a function, TRUE, FALSE, NOT or ( but found {kind or 'the end'}")

    if not tokens:
        raise RuleError("empty rule")
    tree = disjunction()
    if at != len(tokens):
        raise RuleError(f"unexpected {tokens[at][0]} after a complete expression")
    return tree


def evaluate(tree, state_of) -> bool:
    kind = tree[0]
    if kind == "const":
        return tree[1]
    if kind == "fn":
        return state_of(tree[2]) == STATES[tree[1]]
    if kind == "not":
        return not evaluate(tree[1], state_of)
    if kind == "and":
        return evaluate(tree[1], state_of) and evaluate(tree[2], state_of)
    return evaluate(tree[1], state_of) or evaluate(tree[2], state_of)


def names_in(tree) -> list[str]:
    if tree[0] == "fn":
        return [tree[2]]
    if tree[0] in ("const",):
        return []
    return [name for sub in tree[1:] for name in names_in(sub)]


def alarm_name(reference: str) -> str:
    """An alarm name from a name or an alarm ARN (arn:...:alarm:NAME)."""
    if reference.startswith("arn:") and ":alarm:" in reference:
        return reference.split(":alarm:", 1)[1]
    return reference


@hooks.on_infra_start()
def immune_model_composite_alarms() -> None:
    from localstack.aws.api import CommonServiceException
    from localstack.services.cloudwatch.models import LocalStackCompositeAlarm
    from localstack.services.cloudwatch.provider_v2 import CloudwatchProvider
    from localstack.utils.time import timestamp_millis

    def store_of(provider, context):
        return provider.get_store(context.account_id, context.region)

    def by_name(store):
        return {a.alarm["AlarmName"]: a for a in store.alarms.values()}

    def references(composite, name: str) -> bool:
        try:
            tree = parse(composite.alarm["AlarmRule"])
        except RuleError:
            return False
        return name in {alarm_name(n) for n in names_in(tree)}

    def evaluate_composite(provider, context, composite, trigger=None) -> bool:
        """Sets the composite alarm's state from its rule; True when it changed."""
        store = store_of(provider, context)
        alarms = by_name(store)
        try:
            tree = parse(composite.alarm["AlarmRule"])
        except RuleError:
            return False

        def state_of(reference):
            alarm = alarms.get(alarm_name(reference))
            return alarm.alarm.get("StateValue") if alarm is not None else None

        new_state = "ALARM" if evaluate(tree, state_of) else "OK"
        old_state = composite.alarm.get("StateValue")
        if new_state == old_state:
            return False
        now = datetime.datetime.now(datetime.timezone.utc)
        if trigger is not None:
            changed_at = trigger.alarm.get("StateTransitionedTimestamp") or now
            reason = (
                f"{trigger.alarm['AlarmArn']} transitioned to {trigger.alarm['StateValue']} at "
                f"{changed_at.strftime('%A %d %B, %Y %H:%M:%S %Z').strip()}"
            )
            reason_data = {
                "triggeringAlarms": [
                    {
                        "arn": trigger.alarm["AlarmArn"],
                        "state": {"value": trigger.alarm["StateValue"], "timestamp": timestamp_millis(changed_at)},
                    }
                ]
            }
        else:
            reason = f"Alarm rule evaluated to {'TRUE' if new_state == 'ALARM' else 'FALSE'}"
            reason_data = None
        composite.alarm["StateTransitionedTimestamp"] = now
        provider._update_state(context, composite, new_state, reason, reason_data)
        if composite.alarm.get("ActionsEnabled"):
            try:
                provider._run_composite_alarm_actions(context, composite, old_state, trigger or composite)
            except Exception:  # an unreachable action target must not undo the change
                pass
        return True

    def evaluate_parents(provider, context, alarm, depth: int = 0) -> None:
        """Re-evaluates the composite alarms whose rule names this alarm, and theirs."""
        if depth > 10:  # AWS limits nesting; this also stops a cycle
            return
        name = alarm.alarm["AlarmName"]
        for parent in list(store_of(provider, context).alarms.values()):
            if isinstance(parent, LocalStackCompositeAlarm) and parent is not alarm and references(parent, name):
                if evaluate_composite(provider, context, parent, trigger=alarm):
                    evaluate_parents(provider, context, parent, depth + 1)

    def _evaluate_composite_alarms(self, context, triggering_alarm):
        evaluate_parents(self, context, triggering_alarm)

    CloudwatchProvider._evaluate_composite_alarms = _evaluate_composite_alarms

    # LocalStack warns that every rule but ALARM(...) OR ALARM(...) is unsupported; the
    # rules are parsed here (put_composite_alarm below refuses what does not parse).
    CloudwatchProvider._validate_alarm_rule_expression = lambda self, rule: []

    original_put_composite = CloudwatchProvider.put_composite_alarm

    def put_composite_alarm(self, context, request):
        try:
            parse(request.get("AlarmRule") or "")
        except RuleError as e:
            raise CommonServiceException("ValidationError", f"Invalid AlarmRule: {e}", 400, True)
        original_put_composite(self, context, request)
        composite = by_name(store_of(self, context)).get(request["AlarmName"])
        if composite is not None and evaluate_composite(self, context, composite):
            evaluate_parents(self, context, composite)

    put_composite_alarm.__dict__.update(original_put_composite.__dict__)  # keep the @handler marker
    CloudwatchProvider.put_composite_alarm = put_composite_alarm

    original_put_metric = CloudwatchProvider.put_metric_alarm

    def put_metric_alarm(self, context, request):
        original_put_metric(self, context, request)
        alarm = by_name(store_of(self, context)).get(request["AlarmName"])
        if alarm is not None:
            evaluate_parents(self, context, alarm)

    put_metric_alarm.__dict__.update(original_put_metric.__dict__)
    CloudwatchProvider.put_metric_alarm = put_metric_alarm
