"""CloudWatch alarms: which alarms DescribeAlarms and DescribeAlarmHistory answer by
AlarmTypes, composite alarms following their rule, metric-math alarms.

AWS pages:
- DescribeAlarms: https://docs.aws.amazon.com/AmazonCloudWatch/latest/APIReference/API_DescribeAlarms.html
- DescribeAlarmHistory: https://docs.aws.amazon.com/AmazonCloudWatch/latest/APIReference/API_DescribeAlarmHistory.html
- PutCompositeAlarm: https://docs.aws.amazon.com/AmazonCloudWatch/latest/APIReference/API_PutCompositeAlarm.html
- PutMetricAlarm: https://docs.aws.amazon.com/AmazonCloudWatch/latest/APIReference/API_PutMetricAlarm.html
- SetAlarmState: https://docs.aws.amazon.com/AmazonCloudWatch/latest/APIReference/API_SetAlarmState.html
"""

import datetime
import unittest

from support import EmulatorTest, unique


class AlarmsTest(EmulatorTest):
    def metric_alarm(self, name: str | None = None) -> str:
        """A metric alarm whose state only SetAlarmState changes: LocalStack does not
        evaluate metric math alarms itself, so no evaluation races the test's changes."""
        name = name or unique()
        self.cloudwatch.put_metric_alarm(
            AlarmName=name, EvaluationPeriods=1, Threshold=1,
            ComparisonOperator="GreaterThanOrEqualToThreshold", TreatMissingData="notBreaching",
            Metrics=[
                {
                    "Id": "errors",
                    "MetricStat": {
                        "Metric": {"Namespace": "Conformance", "MetricName": "Errors"},
                        "Period": 60, "Stat": "Sum",
                    },
                    "ReturnData": True,
                }
            ],
        )
        self.cleanup(self.cloudwatch.delete_alarms, AlarmNames=[name])
        return name

    def composite(self, rule: str) -> str:
        name = unique()
        self.cloudwatch.put_composite_alarm(AlarmName=name, AlarmRule=rule)
        self.cleanup(self.cloudwatch.delete_alarms, AlarmNames=[name])
        return name

    def set(self, name: str, state: str) -> None:
        self.cloudwatch.set_alarm_state(AlarmName=name, StateValue=state, StateReason="conformance test")

    def composite_state(self, name: str) -> dict:
        [alarm] = self.cloudwatch.describe_alarms(AlarmNames=[name], AlarmTypes=["CompositeAlarm"])[
            "CompositeAlarms"
        ]
        return alarm

    def test_describe_alarms_without_alarm_types_answers_metric_alarms_only(self):
        """DescribeAlarms without AlarmTypes: "If you omit this parameter, only metric
        alarms are returned"; with AlarmTypes=[CompositeAlarm] the composite alarms, with
        both types both.
        https://docs.aws.amazon.com/AmazonCloudWatch/latest/APIReference/API_DescribeAlarms.html"""
        child = self.metric_alarm()
        parent = self.composite(f'ALARM("{child}")')
        names = [child, parent]
        plain = self.cloudwatch.describe_alarms(AlarmNames=names)
        self.assertEqual([a["AlarmName"] for a in plain["MetricAlarms"]], [child])
        self.assertEqual(plain.get("CompositeAlarms", []), [])
        composite = self.cloudwatch.describe_alarms(AlarmNames=names, AlarmTypes=["CompositeAlarm"])
        self.assertEqual([a["AlarmName"] for a in composite["CompositeAlarms"]], [parent])
        self.assertEqual(composite.get("MetricAlarms", []), [])
        both = self.cloudwatch.describe_alarms(AlarmNames=names, AlarmTypes=["CompositeAlarm", "MetricAlarm"])
        self.assertEqual([a["AlarmName"] for a in both["CompositeAlarms"]], [parent])
        self.assertEqual([a["AlarmName"] for a in both["MetricAlarms"]], [child])

    def test_composite_alarm_follows_its_rule(self):
        """A composite alarm's state is its AlarmRule evaluated whenever a child changes
        state: ALARM(), OK(), INSUFFICIENT_DATA(), AND, OR, NOT, parentheses, TRUE and
        FALSE; names with or without quotes, or ARNs.
        https://docs.aws.amazon.com/AmazonCloudWatch/latest/APIReference/API_PutCompositeAlarm.html"""
        a, b, c = self.metric_alarm(), self.metric_alarm(), self.metric_alarm()
        arn_b = self.cloudwatch.describe_alarms(AlarmNames=[b])["MetricAlarms"][0]["AlarmArn"]
        both = self.composite(f'ALARM("{a}") AND ALARM("{arn_b}")')
        either = self.composite(f"(ALARM({a}) OR ALARM({b})) AND NOT OK({c})")
        waiting = self.composite(f'INSUFFICIENT_DATA("{c}") OR FALSE')
        always = self.composite("TRUE")
        for name in (a, b, c):
            self.set(name, "OK")
        self.assertEqual(self.composite_state(both)["StateValue"], "OK")
        self.assertEqual(self.composite_state(waiting)["StateValue"], "OK")
        self.assertEqual(self.composite_state(always)["StateValue"], "ALARM")
        self.set(a, "ALARM")
        self.assertEqual(self.composite_state(both)["StateValue"], "OK")
        self.assertEqual(self.composite_state(either)["StateValue"], "OK")  # NOT OK(c) is false
        self.set(c, "INSUFFICIENT_DATA")
        self.assertEqual(self.composite_state(either)["StateValue"], "ALARM")
        self.assertEqual(self.composite_state(waiting)["StateValue"], "ALARM")
        self.set(b, "ALARM")
        self.assertEqual(self.composite_state(both)["StateValue"], "ALARM")
        self.set(a, "OK")
        self.set(b, "OK")
        self.assertEqual(self.composite_state(both)["StateValue"], "OK")
        self.assertEqual(self.composite_state(either)["StateValue"], "OK")

    def test_nested_composite_and_malformed_rule(self):
        """A composite alarm may name another composite alarm, and follows it; a rule
        that is not an expression of the documented functions and operators is refused
        (ValidationError).
        https://docs.aws.amazon.com/AmazonCloudWatch/latest/APIReference/API_PutCompositeAlarm.html"""
        child = self.metric_alarm()
        inner = self.composite(f"ALARM({child})")
        outer = self.composite(f"NOT ALARM({inner})")
        self.set(child, "ALARM")
        self.assertEqual(self.composite_state(inner)["StateValue"], "ALARM")
        self.assertEqual(self.composite_state(outer)["StateValue"], "OK")
        self.set(child, "OK")
        self.assertEqual(self.composite_state(outer)["StateValue"], "ALARM")
        for rule in (f"ALARM({child}) AND", f"ALARM({child}", "MAYBE(x)"):
            self.assertError(
                "ValidationError", self.cloudwatch.put_composite_alarm, AlarmName=unique(), AlarmRule=rule
            )

    def test_composite_alarm_state_update(self):
        """A composite alarm's change sets StateUpdatedTimestamp and StateReason and
        writes a StateUpdate history item, which DescribeAlarmHistory returns with
        AlarmTypes=[CompositeAlarm] and not without ("If you omit this parameter, only
        metric alarms are returned").
        https://docs.aws.amazon.com/AmazonCloudWatch/latest/APIReference/API_DescribeAlarmHistory.html"""
        child = self.metric_alarm()
        parent = self.composite(f"ALARM({child})")
        self.set(child, "OK")
        before = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(seconds=1)
        self.set(child, "ALARM")
        alarm = self.composite_state(parent)
        self.assertEqual(alarm["StateValue"], "ALARM")
        self.assertGreaterEqual(alarm["StateUpdatedTimestamp"], before)
        self.assertIn(child, alarm["StateReason"])
        history = self.cloudwatch.describe_alarm_history(
            AlarmName=parent, AlarmTypes=["CompositeAlarm"], HistoryItemType="StateUpdate"
        )["AlarmHistoryItems"]
        self.assertIn("ALARM", [h["HistorySummary"].rsplit(" ", 1)[-1] for h in history])
        self.assertTrue(all(h["AlarmType"] == "CompositeAlarm" for h in history))
        plain = self.cloudwatch.describe_alarm_history(AlarmName=parent)["AlarmHistoryItems"]
        self.assertEqual(plain, [])
        metric = self.cloudwatch.describe_alarm_history(AlarmName=child)["AlarmHistoryItems"]
        self.assertTrue(metric)

    def test_set_alarm_state_on_composite(self):
        """SetAlarmState works on a composite alarm too.
        https://docs.aws.amazon.com/AmazonCloudWatch/latest/APIReference/API_SetAlarmState.html"""
        child = self.metric_alarm()
        parent = self.composite(f"ALARM({child})")
        self.set(parent, "ALARM")
        self.assertEqual(self.composite_state(parent)["StateValue"], "ALARM")

    def test_metric_math_alarm(self):
        """PutMetricAlarm with Metrics (metric math) is accepted, listed with its
        Metrics, and SetAlarmState works on it.
        https://docs.aws.amazon.com/AmazonCloudWatch/latest/APIReference/API_PutMetricAlarm.html"""
        name = unique()
        metrics = [
            {
                "Id": "errors",
                "MetricStat": {
                    "Metric": {"Namespace": "Conformance", "MetricName": "Errors"},
                    "Period": 60, "Stat": "Sum",
                },
                "ReturnData": False,
            },
            {
                "Id": "requests",
                "MetricStat": {
                    "Metric": {"Namespace": "Conformance", "MetricName": "Requests"},
                    "Period": 60, "Stat": "Sum",
                },
                "ReturnData": False,
            },
            {"Id": "rate", "Expression": "errors / requests", "Label": "error rate", "ReturnData": True},
        ]
        self.cloudwatch.put_metric_alarm(
            AlarmName=name, Metrics=metrics, EvaluationPeriods=1, Threshold=0.05,
            ComparisonOperator="GreaterThanThreshold",
        )
        self.cleanup(self.cloudwatch.delete_alarms, AlarmNames=[name])
        [alarm] = self.cloudwatch.describe_alarms(AlarmNames=[name])["MetricAlarms"]
        self.assertEqual([m["Id"] for m in alarm["Metrics"]], ["errors", "requests", "rate"])
        self.set(name, "ALARM")
        [alarm] = self.cloudwatch.describe_alarms(AlarmNames=[name])["MetricAlarms"]
        self.assertEqual(alarm["StateValue"], "ALARM")


if __name__ == "__main__":
    unittest.main()
