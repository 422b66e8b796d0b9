"""Makes a gate's alarm fire, as a burst of 5xx errors would, or says the burst is over.

    fire_alarm.py ALARM_NAME           # the burst
    fire_alarm.py ALARM_NAME --over    # the errors stopped: the alarm is OK again

The alarm's metric gets one high data point dated 20 seconds ago and the alarm is set
to ALARM at once. The demo alarm keeps its state without data (missing data ignored),
so it stays in ALARM until `--over`. Used by demo.sh to show a bad release being caught.
"""

import datetime
import os
import sys

import boto3


def main() -> None:
    name = sys.argv[1]
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION", "us-east-1")
    cloudwatch = boto3.client("cloudwatch", region_name=region)
    if sys.argv[2:] == ["--over"]:
        cloudwatch.set_alarm_state(
            AlarmName=name, StateValue="OK", StateReason="demo: the 5xx errors stopped"
        )
        return
    alarm = cloudwatch.describe_alarms(AlarmNames=[name])["MetricAlarms"][0]
    cloudwatch.put_metric_data(
        Namespace=alarm["Namespace"],
        MetricData=[
            {
                "MetricName": alarm["MetricName"],
                "Dimensions": alarm["Dimensions"],
                "Timestamp": datetime.datetime.now(datetime.timezone.utc)
                - datetime.timedelta(seconds=20),
                "Value": alarm["Threshold"] * 10 + 10,
            }
        ],
    )
    cloudwatch.set_alarm_state(
        AlarmName=name,
        StateValue="ALARM",
        StateReason="demo: 5xx errors over the threshold",
    )


if __name__ == "__main__":
    main()
