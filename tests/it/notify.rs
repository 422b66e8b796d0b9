//! Notifications on LocalStack: notices published to an SNS topic and read back from a
//! subscribed SQS queue, posted to a webhook on 127.0.0.1, and a dead webhook that fails
//! nothing and never shows its address.

use crate::harness::{World, ENDPOINT};
use aws_sdk_cloudwatch::types::StateValue;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A topic with a queue subscribed to it (raw delivery: the queue holds the message as
/// published). Returns the topic's ARN and the queue's URL.
async fn topic_with_queue(
    prefix: &str,
) -> (aws_sdk_sns::Client, aws_sdk_sqs::Client, String, String) {
    let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(ENDPOINT)
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_sns::config::Credentials::new(
            "test", "test", None, None, "tests",
        ))
        .load()
        .await;
    let sns = aws_sdk_sns::Client::new(&config);
    let sqs = aws_sdk_sqs::Client::new(&config);
    let topic = sns
        .create_topic()
        .name(format!("{prefix}-deploys"))
        .send()
        .await
        .unwrap()
        .topic_arn
        .unwrap();
    let queue = sqs
        .create_queue()
        .queue_name(format!("{prefix}-notices"))
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    let queue_arn = sqs
        .get_queue_attributes()
        .queue_url(&queue)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
        .send()
        .await
        .unwrap()
        .attributes
        .unwrap()[&aws_sdk_sqs::types::QueueAttributeName::QueueArn]
        .clone();
    sns.subscribe()
        .topic_arn(&topic)
        .protocol("sqs")
        .endpoint(queue_arn)
        .attributes("RawMessageDelivery", "true")
        .send()
        .await
        .unwrap();
    (sns, sqs, topic, queue)
}

/// Every message the queue holds now (waiting up to a few seconds for the first).
async fn received(sqs: &aws_sdk_sqs::Client, queue: &str) -> Vec<serde_json::Value> {
    let mut all = Vec::new();
    loop {
        let out = sqs
            .receive_message()
            .queue_url(queue)
            .max_number_of_messages(10)
            .wait_time_seconds(if all.is_empty() { 5 } else { 1 })
            .send()
            .await
            .unwrap();
        let messages = out.messages.unwrap_or_default();
        if messages.is_empty() {
            return all;
        }
        for m in messages {
            all.push(serde_json::from_str(m.body.as_deref().unwrap()).unwrap());
            sqs.delete_message()
                .queue_url(queue)
                .receipt_handle(m.receipt_handle.unwrap())
                .send()
                .await
                .unwrap();
        }
    }
}

/// A webhook on 127.0.0.1 that answers 200 and hands over each body it was posted.
async fn webhook() -> (
    String,
    tokio::sync::mpsc::UnboundedReceiver<serde_json::Value>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "http://{}/hooks/secret-token",
        listener.local_addr().unwrap()
    );
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            let mut request = Vec::new();
            let mut buf = [0u8; 8192];
            let body = loop {
                let n = socket.read(&mut buf).await.unwrap_or(0);
                request.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&request).to_string();
                if let Some((head, body)) = text.split_once("\r\n\r\n") {
                    let length = head
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse::<usize>().unwrap())
                        })
                        .unwrap_or(0);
                    if body.len() >= length {
                        break body.to_string();
                    }
                }
                if n == 0 {
                    break String::new();
                }
            };
            let _ = tx.send(serde_json::from_str(&body).unwrap_or_default());
            let _ = socket
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                .await;
        }
    });
    (url, rx)
}

#[tokio::test(flavor = "multi_thread")]
async fn releases_rollbacks_and_waits_for_a_person_are_notified_and_a_dead_webhook_fails_nothing() {
    let w = World::new();
    let sdk = w.sdk().await;
    let (_sns, sqs, topic, queue) = topic_with_queue(&w.prefix).await;
    let (hook, mut posted) = webhook().await;
    let alarm = w.surroundings.alarm.clone();
    sdk.set_alarm(&alarm, StateValue::Ok).await;
    let s = &w.surroundings;
    let config = |mode: &str, pause: &str| {
        let gate = format!(
            "gate \"errors\" {{\n      alarm = \"{alarm}\"\n      mode = \"{mode}\"\n    }}"
        );
        let fleet = w
            .fleet_config(&s.source_ami, &s.load_balancer, &gate)
            .replace("pause          = \"1s\"", &format!("pause = \"{pause}\""));
        format!(
            r#"{fleet}
variable "chat_hook" {{
  type      = string
  sensitive = true
}}

notify "team" {{
  sns_topic = "{topic}"
}}

notify "chat" {{
  webhook = var.chat_hook
  on      = ["rolled_back", "awaiting_approval"]
}}

notify "gone" {{
  webhook = "http://127.0.0.1:9/hooks/dead-token"
}}
"#
        )
    };
    let hook_var = format!("chat_hook={hook}");

    // A release: the topic hears of it, the chat (not asking for releases) does not, the
    // dead webhook is a warning that does not change the exit code.
    w.write("main.hcl", &config("enforce", "1s"));
    let plan = w.immune(&["plan", "--var", "release=v1", "--var", &hook_var]);
    assert_eq!(plan.code, 0, "{plan:?}");
    assert!(
        plan.stdout
            .contains(&format!("Notifies \"team\" (SNS topic {topic}) of: released, rolled_back, awaiting_approval, stopped, held")),
        "{plan:?}"
    );
    assert!(
        plan.stdout
            .contains("Notifies \"chat\" (webhook on 127.0.0.1:"),
        "{plan:?}"
    );
    let v1 = w.immune(&[
        "apply",
        "--auto-approve",
        "--var",
        "release=v1",
        "--var",
        &hook_var,
    ]);
    assert_eq!(
        v1.code, 0,
        "a notice that cannot be sent fails nothing: {v1:?}"
    );
    assert!(
        v1.stderr.contains(
            "warning: notify \"gone\" (webhook on 127.0.0.1:9) did not get the released notice"
        ),
        "{v1:?}"
    );
    for run in [&plan, &v1] {
        let all = format!("{}{}", run.stdout, run.stderr);
        assert!(
            !all.contains("secret-token") && !all.contains("dead-token"),
            "a webhook's address was printed: {run:?}"
        );
    }
    let notices = received(&sqs, &queue).await;
    assert_eq!(notices.len(), 1, "{notices:?}");
    assert_eq!(notices[0]["event"], "released");
    assert_eq!(notices[0]["fleet"], w.prefix);
    assert_eq!(notices[0]["release"], "v1");
    assert_eq!(notices[0]["group"], w.group(1));
    assert!(
        posted.try_recv().is_err(),
        "the chat did not ask for releases"
    );

    // A manual gate waiting for a person: both hear of it while the apply waits.
    w.write("main.hcl", &config("manual", "3s"));
    let v2 = w.spawn(&[
        "apply",
        "--auto-approve",
        "--var",
        "release=v2",
        "--var",
        &hook_var,
    ]);
    w.wait_for_phase("observe");
    sdk.set_alarm(&alarm, StateValue::Alarm).await;
    let waiting = tokio::time::timeout(Duration::from_secs(60), posted.recv())
        .await
        .expect("the chat hears of the wait")
        .unwrap();
    assert_eq!(waiting["event"], "awaiting_approval", "{waiting}");
    assert!(
        waiting["text"]
            .as_str()
            .unwrap()
            .contains(&format!("immune approve {}", w.prefix)),
        "{waiting}"
    );
    let notices = received(&sqs, &queue).await;
    assert_eq!(notices.len(), 1, "{notices:?}");
    assert_eq!(notices[0]["event"], "awaiting_approval");
    assert_eq!(notices[0]["release"], "v2");
    // Rejected: the release rolls back, is locked, and everyone hears of it.
    assert_eq!(w.immune(&["reject", &w.prefix]).code, 0);
    let v2 = v2.wait(Duration::from_secs(60));
    sdk.set_alarm(&alarm, StateValue::Ok).await;
    assert_eq!(v2.code, 3, "{v2:?}");
    let rolled_back = tokio::time::timeout(Duration::from_secs(30), posted.recv())
        .await
        .expect("the chat hears of the rollback")
        .unwrap();
    assert_eq!(rolled_back["event"], "rolled_back", "{rolled_back}");
    assert_eq!(rolled_back["locked"], true);
    let notices = received(&sqs, &queue).await;
    assert_eq!(notices.len(), 1, "{notices:?}");
    assert_eq!(notices[0]["event"], "rolled_back");
    assert_eq!(notices[0]["locked"], true);
    assert_eq!(
        notices[0]["group"],
        w.group(1),
        "what runs now: {notices:?}"
    );
    assert!(
        notices[0]["message"]
            .as_str()
            .unwrap()
            .contains("ROLLED BACK"),
        "{notices:?}"
    );
}
