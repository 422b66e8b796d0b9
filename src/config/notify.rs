//! `notify "NAME" { ... }`: where the events that matter to a team are sent.

use super::diagnostic::{did_you_mean, Diagnostic};
use super::model::{NoticeKind, Notify, NotifyTarget, Secret};
use super::reader::BlockReader;

/// Reads one block; `None` when it is wrong (the problems are recorded).
pub fn read(r: &mut BlockReader, name: &str) -> Option<Notify> {
    // Written, though maybe not known: a command that runs without every variable
    // (`immune status`, `rollback`) leaves a webhook from an unset variable unknown.
    let written = (r.has("sns_topic"), r.has("webhook"));
    let topic = r.string("sns_topic");
    let webhook = r.string("webhook");
    let before = r.diags.0.len();
    let on = r.optional_strings("on");
    // A wrong type is reported already: it is not also an empty list.
    let on = on.filter(|names| !names.is_empty() || r.diags.0.len() == before);
    let target = match (topic, webhook) {
        _ if written == (true, true) => {
            r.diags.push(
                Diagnostic::new(
                    format!("notify \"{name}\" sets both `sns_topic` and `webhook`"),
                    r.body_span("webhook"),
                )
                .with_hint(
                    "one notify block sends to one place: write a second block for the other",
                ),
            );
            None
        }
        (None, None) if written != (false, false) => None,
        (None, None) => {
            r.diags.push(
                Diagnostic::new(
                    format!("notify \"{name}\" says nowhere to send"),
                    r.span.clone(),
                )
                .with_hint("add `sns_topic = \"arn:aws:sns:REGION:ACCOUNT:NAME\"` or `webhook = \"https://...\"`"),
            );
            None
        }
        (Some(topic), None) => {
            match topic_region(&topic) {
                Some(_) => Some(NotifyTarget::Sns { topic_arn: topic }),
                None => {
                    r.diags.push(
                    Diagnostic::new(
                        format!("sns_topic `{topic}` is not an SNS topic ARN"),
                        r.body_span("sns_topic"),
                    )
                    .with_hint("write the topic's ARN, as in arn:aws:sns:eu-west-1:123456789012:deploys"),
                );
                    None
                }
            }
        }
        (Some(_), Some(_)) => None,
        // From a variable that is not sensitive, the address would be written into every
        // saved plan with the variable's value.
        (None, Some(_)) if r.provenance("webhook") == Some((false, false)) => {
            r.diags.push(
                Diagnostic::new(
                    format!("the webhook of notify \"{name}\" comes from a value not marked sensitive"),
                    r.body_span("webhook"),
                )
                .with_hint("a webhook's address is its password: give it through a variable with `sensitive = true`, which immune never writes to a saved plan, a log or the state"),
            );
            None
        }
        (None, Some(url)) => match webhook_problem(&url) {
            // The address itself is not repeated: it may be the webhook's password.
            Some(problem) => {
                r.diags.push(
                    Diagnostic::new(
                        format!("webhook of notify \"{name}\" {problem}"),
                        r.body_span("webhook"),
                    )
                    .with_hint("use an https:// address (http:// only to 127.0.0.1 or localhost)"),
                );
                None
            }
            None => Some(NotifyTarget::Webhook { url: Secret(url) }),
        },
    };
    let on = match on {
        None => NoticeKind::ALL.to_vec(),
        Some(names) => {
            let known: Vec<&str> = NoticeKind::ALL.iter().map(|k| k.as_str()).collect();
            let mut kinds = Vec::new();
            for word in &names {
                match NoticeKind::ALL.iter().find(|k| k.as_str() == word) {
                    Some(kind) if !kinds.contains(kind) => kinds.push(*kind),
                    Some(_) => {}
                    None => {
                        let d = Diagnostic::new(
                            format!("notify \"{name}\": unknown event `{word}` in `on`"),
                            r.body_span("on"),
                        );
                        r.diags.push(match did_you_mean(word, &known) {
                            Some(k) => d.with_hint(format!("did you mean \"{k}\"?")),
                            None => d.with_hint(format!("the events are: {}", known.join(", "))),
                        });
                    }
                }
            }
            if names.is_empty() {
                r.diags.push(
                    Diagnostic::new(
                        format!("notify \"{name}\": `on` is empty"),
                        r.body_span("on"),
                    )
                    .with_hint("name at least one event, or leave `on` out to send them all"),
                );
            }
            kinds
        }
    };
    Some(Notify {
        name: name.to_string(),
        target: target?,
        on,
    })
}

/// The region of `arn:PARTITION:sns:REGION:ACCOUNT:NAME`, when it is one.
pub fn topic_region(arn: &str) -> Option<&str> {
    let parts: Vec<&str> = arn.split(':').collect();
    match parts.as_slice() {
        ["arn", partition, "sns", region, account, name]
            if partition.starts_with("aws")
                && !region.is_empty()
                && account.len() == 12
                && account.chars().all(|c| c.is_ascii_digit())
                && !name.is_empty() =>
        {
            Some(region)
        }
        _ => None,
    }
}

/// A URL's scheme and host (with its port, without `user:password@`).
pub fn scheme_and_host(url: &str) -> Option<(&str, &str)> {
    let (scheme, rest) = url.split_once("://")?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    Some((
        scheme,
        authority.rsplit_once('@').map_or(authority, |(_, h)| h),
    ))
}

/// Why a webhook address cannot be used, in words that do not repeat it.
fn webhook_problem(url: &str) -> Option<&'static str> {
    let Some((scheme, host)) = scheme_and_host(url) else {
        return Some("is not an http(s) address");
    };
    let bare = host.split(':').next().unwrap_or_default();
    match scheme {
        _ if bare.is_empty() => Some("has no host"),
        "https" => None,
        "http" if matches!(bare, "127.0.0.1" | "localhost") => None,
        "http" => {
            Some("is plain http to another machine: its events would cross the network unencrypted")
        }
        _ => Some("is not an http(s) address"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_arns_are_told_from_other_strings() {
        assert_eq!(
            topic_region("arn:aws:sns:eu-west-1:123456789012:deploys"),
            Some("eu-west-1")
        );
        assert_eq!(
            topic_region("arn:aws-us-gov:sns:us-gov-west-1:123456789012:t"),
            Some("us-gov-west-1")
        );
        assert_eq!(topic_region("arn:aws:sqs:eu-west-1:123456789012:q"), None);
        assert_eq!(topic_region("arn:aws:sns:eu-west-1:1234:deploys"), None);
        assert_eq!(topic_region("deploys"), None);
    }

    #[test]
    fn a_webhook_is_shown_by_its_host_alone() {
        let shown = |url: &str| {
            NotifyTarget::Webhook {
                url: Secret(url.into()),
            }
            .shown()
        };
        assert_eq!(
            shown("https://hooks.example.com/T0/B1/x"),
            "webhook on hooks.example.com"
        );
        assert_eq!(
            shown("https://user:PWSECRET@hooks.example.com:8443/x?token=1"),
            "webhook on hooks.example.com:8443"
        );
        assert_eq!(format!("{:?}", Secret("abc".into())), "(hidden)");
    }

    #[test]
    fn webhooks_must_be_encrypted_unless_local() {
        assert_eq!(webhook_problem("https://hooks.example.com/T0/B1/x"), None);
        assert_eq!(webhook_problem("http://127.0.0.1:8080/hook"), None);
        assert_eq!(webhook_problem("http://localhost/hook"), None);
        assert!(webhook_problem("http://hooks.example.com/x").is_some());
        assert!(webhook_problem("ftp://example.com/x").is_some());
        assert!(webhook_problem("https:///x").is_some());
        assert!(webhook_problem("hooks.example.com").is_some());
    }
}
