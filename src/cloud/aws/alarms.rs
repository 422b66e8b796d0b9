//! CloudWatch alarms: read for every gate, created and deleted per release for metric gates.
//! A gate's alarm may be a metric alarm (one metric, or metric math) or a composite
//! alarm: DescribeAlarms and DescribeAlarmHistory answer metric alarms only unless asked
//! for both types (AlarmTypes in the CloudWatch API reference,
//! https://docs.aws.amazon.com/AmazonCloudWatch/latest/APIReference/API_DescribeAlarms.html).

use super::*;
use aws_sdk_cloudwatch::primitives::{DateTime, DateTimeFormat};
use aws_sdk_cloudwatch::types::{
    AlarmType, ComparisonOperator, CompositeAlarm, Dimension, HistoryItemType, MetricAlarm,
    StateValue, Statistic, Tag,
};

/// An alarm of either type, as DescribeAlarms answers it.
enum Alarm {
    Metric(Box<MetricAlarm>),
    Composite(Box<CompositeAlarm>),
}

impl Alarm {
    fn name(&self) -> Option<&str> {
        match self {
            Alarm::Metric(a) => a.alarm_name(),
            Alarm::Composite(a) => a.alarm_name(),
        }
    }

    fn arn(&self) -> Option<&str> {
        match self {
            Alarm::Metric(a) => a.alarm_arn(),
            Alarm::Composite(a) => a.alarm_arn(),
        }
    }

    fn reading(&self) -> AlarmReading {
        let (state, reason, updated) = match self {
            Alarm::Metric(a) => (
                a.state_value(),
                a.state_reason(),
                a.state_updated_timestamp(),
            ),
            Alarm::Composite(a) => (
                a.state_value(),
                a.state_reason(),
                a.state_updated_timestamp(),
            ),
        };
        AlarmReading {
            state: match state {
                Some(StateValue::Alarm) => AlarmState::Alarm,
                Some(StateValue::Ok) => AlarmState::Ok,
                _ => AlarmState::InsufficientData,
            },
            reason: reason.unwrap_or_default().to_string(),
            since: updated.and_then(|t| t.fmt(DateTimeFormat::DateTime).ok()),
            needs: match self {
                Alarm::Metric(a) => needs(a),
                // Its children decide when it can change: see `composite_needs`.
                Alarm::Composite(_) => None,
            },
        }
    }
}

/// The alarms a composite alarm's rule names: `ALARM("web-5xx") OR OK(arn:...:alarm:db)`
/// names `web-5xx` and `db` (AlarmRule in the CloudWatch API reference: a name in double
/// quotes, or an alarm ARN).
fn rule_alarms(rule: &str) -> Vec<String> {
    let mut names = Vec::new();
    for function in ["ALARM(", "OK(", "INSUFFICIENT_DATA("] {
        for (at, _) in rule.match_indices(function) {
            // `OK(` inside `...ALARM_OK(` would not be a function: AWS has none such,
            // but a name may end in OK.
            let before = rule[..at].chars().last();
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '-') {
                continue;
            }
            let rest = &rule[at + function.len()..];
            let Some(end) = rest.find(')') else { continue };
            let inner = rest[..end].trim().trim_matches('"');
            let name = match inner.split_once(":alarm:") {
                Some((_, name)) => name,
                None => inner,
            };
            if !name.is_empty() {
                names.push(name.to_string());
            }
        }
    }
    names
}

/// How long a metric alarm needs before it can go into ALARM: its period times the
/// datapoints to alarm (for metric math, the longest period of its metrics), plus the
/// time its metrics take to be published.
fn needs(alarm: &MetricAlarm) -> Option<Duration> {
    let datapoints = alarm
        .datapoints_to_alarm()
        .or(alarm.evaluation_periods())
        .unwrap_or(1)
        .max(1) as u64;
    let math = alarm.metrics();
    let period = alarm.period().or_else(|| {
        math.iter()
            .filter_map(|q| q.period().or_else(|| q.metric_stat()?.period()))
            .max()
    })?;
    let namespaces: Vec<&str> = match alarm.namespace() {
        Some(namespace) => vec![namespace],
        None => math
            .iter()
            .filter_map(|q| q.metric_stat()?.metric()?.namespace())
            .collect(),
    };
    let delay = namespaces
        .into_iter()
        .map(publication_delay)
        .max()
        .unwrap_or_default();
    Some(Duration::from_secs(period.max(0) as u64 * datapoints) + delay)
}

impl Aws {
    async fn describe_alarms(&self, names: &[String]) -> CloudResult<Vec<Alarm>> {
        let mut alarms = Vec::new();
        // DescribeAlarms takes at most 100 names a call, and answers 50 alarms a page
        // unless asked for the most, 100: a gate whose alarm is on a later page would
        // read as missing.
        for chunk in names.chunks(100) {
            let mut token = None;
            loop {
                let out = self
                    .cloudwatch
                    .describe_alarms()
                    .set_alarm_names(Some(chunk.to_vec()))
                    .alarm_types(AlarmType::MetricAlarm)
                    .alarm_types(AlarmType::CompositeAlarm)
                    .max_records(100)
                    .set_next_token(token)
                    .send()
                    .await
                    .map_err(|e| sdk_error("DescribeAlarms", e))?;
                alarms.extend(
                    out.metric_alarms()
                        .iter()
                        .cloned()
                        .map(|a| Alarm::Metric(Box::new(a))),
                );
                alarms.extend(
                    out.composite_alarms()
                        .iter()
                        .cloned()
                        .map(|a| Alarm::Composite(Box::new(a))),
                );
                token = out.next_token().map(str::to_string);
                if token.is_none() {
                    break;
                }
            }
        }
        Ok(alarms)
    }

    /// The alarms' readings, through the region's one poller.
    pub(super) async fn alarms(
        &self,
        names: &[String],
    ) -> CloudResult<BTreeMap<String, AlarmReading>> {
        self.poller
            .alarms(names, |all| async move { self.read_alarms(&all).await })
            .await
    }

    async fn read_alarms(&self, names: &[String]) -> CloudResult<BTreeMap<String, AlarmReading>> {
        let alarms = self.describe_alarms(names).await?;
        let mut readings = BTreeMap::new();
        for alarm in &alarms {
            let Some(name) = alarm.name() else { continue };
            let mut reading = alarm.reading();
            if let Alarm::Composite(composite) = alarm {
                reading.needs = self.composite_needs(name, composite).await?;
            }
            readings.insert(name.to_string(), reading);
        }
        Ok(readings)
    }

    /// How long a composite alarm needs before it can go into ALARM: as long as the
    /// slowest alarm its rule names (composites in it followed, three deep), read once
    /// per process, since an alarm's period rarely changes. `None` when unknown.
    async fn composite_needs(
        &self,
        name: &str,
        alarm: &CompositeAlarm,
    ) -> CloudResult<Option<Duration>> {
        if let Some(known) = self.composite_needs.lock().unwrap().get(name) {
            return Ok(*known);
        }
        let mut needs: Option<Duration> = None;
        let mut rules = vec![alarm.alarm_rule().unwrap_or_default().to_string()];
        for _depth in 0..3 {
            let children: Vec<String> = rules.iter().flat_map(|r| rule_alarms(r)).collect();
            if children.is_empty() {
                break;
            }
            rules.clear();
            for child in self.describe_alarms(&children).await? {
                match &child {
                    Alarm::Metric(metric) => {
                        needs = needs.max(self::needs(metric));
                    }
                    Alarm::Composite(inner) => {
                        rules.push(inner.alarm_rule().unwrap_or_default().to_string())
                    }
                }
            }
        }
        self.composite_needs
            .lock()
            .unwrap()
            .insert(name.to_string(), needs);
        Ok(needs)
    }

    /// The alarm's own metric over the window, by GetMetricStatistics with its statistic
    /// and period. An alarm on a metric math expression has no single metric: `None`.
    pub(super) async fn alarm_metric_peak(
        &self,
        name: &str,
        since: &str,
    ) -> CloudResult<Option<MetricPeak>> {
        let start = DateTime::from_str(since, DateTimeFormat::DateTime)
            .map_err(|e| CloudError::Invalid(format!("`{since}` is not an RFC 3339 time: {e}")))?;
        // A composite alarm watches no metric of its own.
        let Some(Alarm::Metric(alarm)) = self
            .describe_alarms(&[name.to_string()])
            .await?
            .into_iter()
            .next()
        else {
            return Ok(None);
        };
        let (Some(namespace), Some(metric), Some(threshold)) =
            (alarm.namespace(), alarm.metric_name(), alarm.threshold())
        else {
            return Ok(None);
        };
        let comparison = match alarm.comparison_operator() {
            Some(ComparisonOperator::GreaterThanThreshold) => crate::config::Comparison::Greater,
            Some(ComparisonOperator::GreaterThanOrEqualToThreshold) => {
                crate::config::Comparison::GreaterOrEqual
            }
            Some(ComparisonOperator::LessThanThreshold) => crate::config::Comparison::Less,
            Some(ComparisonOperator::LessThanOrEqualToThreshold) => {
                crate::config::Comparison::LessOrEqual
            }
            _ => return Ok(None),
        };
        let statistic = alarm.statistic().cloned().unwrap_or(Statistic::Average);
        let now = DateTime::from(std::time::SystemTime::now());
        let mut request = self
            .cloudwatch
            .get_metric_statistics()
            .namespace(namespace)
            .metric_name(metric)
            .set_dimensions(Some(alarm.dimensions().to_vec()))
            .start_time(start)
            .end_time(now)
            .period(alarm.period().unwrap_or(60).max(1));
        request = match alarm.extended_statistic() {
            Some(percentile) => request.extended_statistics(percentile),
            None => request.statistics(statistic.clone()),
        };
        let out = request
            .send()
            .await
            .map_err(|e| sdk_error("GetMetricStatistics", e))?;
        let values = out
            .datapoints()
            .iter()
            .filter_map(|d| match alarm.extended_statistic() {
                Some(p) => d.extended_statistics().and_then(|e| e.get(p).copied()),
                None => match statistic {
                    Statistic::Sum => d.sum(),
                    Statistic::Maximum => d.maximum(),
                    Statistic::Minimum => d.minimum(),
                    Statistic::SampleCount => d.sample_count(),
                    _ => d.average(),
                },
            });
        let value = match comparison {
            crate::config::Comparison::Less | crate::config::Comparison::LessOrEqual => values
                .fold(None, |worst: Option<f64>, v| {
                    Some(worst.map_or(v, |w| w.min(v)))
                }),
            _ => values.fold(None, |worst: Option<f64>, v| {
                Some(worst.map_or(v, |w| w.max(v)))
            }),
        };
        Ok(Some(MetricPeak {
            value,
            threshold,
            comparison,
        }))
    }

    /// DescribeAlarmHistory takes one alarm name a call; the calls are made side by side.
    pub(super) async fn alarm_transitions(
        &self,
        names: &[String],
        since: &str,
    ) -> CloudResult<Vec<AlarmTransition>> {
        let start = DateTime::from_str(since, DateTimeFormat::DateTime)
            .map_err(|e| CloudError::Invalid(format!("`{since}` is not an RFC 3339 time: {e}")))?;
        let calls = names.iter().map(|name| self.transitions_of(name, start));
        let found = futures_util::future::try_join_all(calls).await?;
        Ok(found.into_iter().flatten().collect())
    }

    async fn transitions_of(
        &self,
        name: &str,
        start: DateTime,
    ) -> CloudResult<Vec<AlarmTransition>> {
        let mut transitions = Vec::new();
        let mut token = None;
        loop {
            let out = self
                .cloudwatch
                .describe_alarm_history()
                .alarm_name(name)
                .alarm_types(AlarmType::MetricAlarm)
                .alarm_types(AlarmType::CompositeAlarm)
                .history_item_type(HistoryItemType::StateUpdate)
                .start_date(start)
                .set_next_token(token)
                .send()
                .await
                .map_err(|e| sdk_error("DescribeAlarmHistory", e))?;
            for item in out.alarm_history_items() {
                // HistoryData is JSON: {"oldState": {...}, "newState": {"stateValue":
                // "ALARM", "stateReason": "..."}}.
                let data: serde_json::Value = item
                    .history_data()
                    .and_then(|d| serde_json::from_str(d).ok())
                    .unwrap_or_default();
                if data["newState"]["stateValue"] != "ALARM" {
                    continue;
                }
                transitions.push(AlarmTransition {
                    alarm: name.to_string(),
                    at: item
                        .timestamp()
                        .and_then(|t| t.fmt(DateTimeFormat::DateTime).ok())
                        .unwrap_or_default(),
                    reason: data["newState"]["stateReason"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                });
            }
            token = out.next_token().map(str::to_string);
            if token.is_none() {
                return Ok(transitions);
            }
        }
    }

    async fn alarm_holder(&self, alarm: &Alarm) -> CloudResult<Holder> {
        let tags = self
            .cloudwatch
            .list_tags_for_resource()
            .resource_arn(alarm.arn().unwrap_or_default())
            .send()
            .await
            .map_err(|e| sdk_error("ListTagsForResource", e))?;
        Ok(self.holder(tags.tags().iter().map(|t| (t.key(), t.value()))))
    }

    /// Who holds each of these alarms that exists.
    pub(super) async fn alarm_holders(
        &self,
        names: &[String],
    ) -> CloudResult<Vec<(String, Holder)>> {
        let mut holders = Vec::new();
        if names.is_empty() {
            return Ok(holders);
        }
        for alarm in self.describe_alarms(names).await? {
            let holder = self.alarm_holder(&alarm).await?;
            holders.push((alarm.name().unwrap_or_default().to_string(), holder));
        }
        Ok(holders)
    }

    /// The alarm's ARN when it exists; an error when it exists and is not this
    /// configuration's.
    async fn owned_alarm(&self, name: &str) -> CloudResult<Option<String>> {
        let Some(alarm) = self.describe_alarms(&[name.to_string()]).await?.pop() else {
            return Ok(None);
        };
        match self.alarm_holder(&alarm).await? {
            Holder::Ours => Ok(Some(alarm.arn().unwrap_or_default().to_string())),
            other => Err(CloudError::not_ours(format!("alarm {name}"), other)),
        }
    }

    pub(super) async fn put_alarm(&self, request: &AlarmRequest) -> CloudResult<()> {
        self.owned_alarm(&request.name).await?;
        let dimensions = request
            .dimensions
            .iter()
            .map(|(k, v)| Dimension::builder().name(k).value(v).build())
            .collect();
        let tags = request
            .tags
            .pairs()
            .into_iter()
            .map(|(k, v)| Tag::builder().key(k).value(v).build())
            .collect();
        let mut put = self
            .cloudwatch
            .put_metric_alarm()
            .alarm_name(&request.name)
            .alarm_description(format!(
                "immune gate for fleet {} release {}; deleted with the release",
                request.tags.fleet, request.tags.release
            ))
            .namespace(&request.namespace)
            .metric_name(&request.metric)
            .set_dimensions(Some(dimensions))
            .period(request.period.as_secs() as i32)
            .evaluation_periods(request.evaluation_periods as i32)
            .threshold(request.threshold)
            .comparison_operator(ComparisonOperator::from(request.comparison.cloudwatch()))
            .set_tags(Some(tags));
        // Percentiles (`p99`) are extended statistics; the rest are plain ones.
        put = if request.statistic.starts_with('p') {
            put.extended_statistic(&request.statistic)
        } else {
            put.statistic(Statistic::from(request.statistic.as_str()))
        };
        put.send()
            .await
            .map_err(|e| sdk_error("PutMetricAlarm", e))?;
        Ok(())
    }

    pub(super) async fn delete_alarm(&self, name: &str) -> CloudResult<()> {
        if self.owned_alarm(name).await?.is_none() {
            return Ok(());
        }
        self.cloudwatch
            .delete_alarms()
            .alarm_names(name)
            .send()
            .await
            .map_err(|e| sdk_error("DeleteAlarms", e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_composite_rule_names_its_alarms_by_name_or_arn() {
        assert_eq!(
            super::rule_alarms(
                r#"ALARM("web-5xx") OR (OK(arn:aws:cloudwatch:us-east-1:1:alarm:db-OK) AND NOT INSUFFICIENT_DATA( "lat" ))"#
            ),
            ["web-5xx", "db-OK", "lat"]
        );
        assert!(super::rule_alarms("TRUE").is_empty());
    }
}
