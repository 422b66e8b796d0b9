//! Notifications: the events a team must hear of (a release done, rolled back or held, a
//! gate waiting for a person, an apply that stopped) sent to SNS topics and webhooks. A notice
//! is sent after the state that backs it is saved, and a notice that cannot be sent is a
//! warning: it never fails, slows or stops a release beyond its few seconds' timeout.

use crate::config::{Config, NoticeKind, Notify, NotifyTarget};
use futures_util::future::BoxFuture;
use serde::Serialize;
use std::sync::Mutex;
use std::time::Duration;
use tokio::task::JoinHandle;

/// How long one notice may take to send, retries included.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);

/// One event that matters, in words a person reads and fields a program filters on.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Notice {
    #[serde(rename = "event")]
    pub kind: NoticeKind,
    pub fleet: String,
    /// One line, e.g. "ROLLED BACK: gate errors failed at step 1 ...; the fleet is locked".
    #[serde(rename = "message")]
    pub text: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub release: Option<String>,
    /// The group that runs now, when one does.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// The fleet is locked until `immune unlock`.
    pub locked: bool,
}

/// What is posted to a webhook and published to a topic: the notice, a `text` that chat
/// webhooks (Slack, Mattermost, Teams' incoming webhooks) show as it is, and where from.
#[derive(Serialize)]
struct Payload<'a> {
    text: String,
    #[serde(flatten)]
    notice: &'a Notice,
    #[serde(skip_serializing_if = "Option::is_none")]
    namespace: Option<&'a str>,
    at: String,
}

impl Notice {
    /// The subject of an SNS message: short, one line.
    fn subject(&self) -> String {
        let what = match self.kind {
            NoticeKind::Released => "released",
            NoticeKind::RolledBack => "rolled back",
            NoticeKind::AwaitingApproval => "waiting for approval",
            NoticeKind::Stopped => "apply stopped",
            NoticeKind::Held => "HELD (irreversible release failed)",
        };
        let mut subject = format!("immune: fleet.{} {what}", self.fleet);
        // SNS allows 100 characters.
        subject.truncate(100);
        subject
    }
}

/// The plan's lines on who hears of this apply, empty when nobody does.
pub fn describe(config: &Config) -> String {
    let mut out = String::new();
    for notify in &config.notify {
        let on: Vec<&str> = notify.on.iter().map(|k| k.as_str()).collect();
        out.push_str(&format!(
            "Notifies \"{}\" ({}) of: {}\n",
            notify.name,
            notify.target.shown(),
            on.join(", ")
        ));
    }
    out
}

enum Sender {
    Sns(aws_sdk_sns::Client),
    Webhook(reqwest::Client),
}

/// The configuration's notify blocks, ready to send.
pub struct Notifier {
    targets: Vec<(Notify, Sender)>,
    namespace: Option<String>,
    sending: Mutex<Vec<JoinHandle<()>>>,
}

impl Notifier {
    /// One client per target, made once. Nothing is sent or checked yet.
    pub async fn new(config: &Config) -> Notifier {
        let mut targets = Vec::new();
        for notify in &config.notify {
            let sender = match &notify.target {
                NotifyTarget::Sns { topic_arn } => {
                    let region = crate::config::topic_region(topic_arn).map(str::to_string);
                    let sdk = crate::cloud::aws::sdk_config(region).await;
                    Sender::Sns(aws_sdk_sns::Client::new(&sdk))
                }
                NotifyTarget::Webhook { .. } => Sender::Webhook(
                    reqwest::Client::builder()
                        .timeout(SEND_TIMEOUT)
                        // A redirect could send the notice elsewhere, over plain http.
                        .redirect(reqwest::redirect::Policy::none())
                        .user_agent(concat!("immune/", env!("CARGO_PKG_VERSION")))
                        .build()
                        .unwrap_or_default(),
                ),
            };
            targets.push((notify.clone(), sender));
        }
        Notifier {
            targets,
            namespace: config.namespace.clone(),
            sending: Mutex::new(Vec::new()),
        }
    }

    /// A notifier that sends nothing.
    pub fn none() -> Notifier {
        Notifier {
            targets: Vec::new(),
            namespace: None,
            sending: Mutex::new(Vec::new()),
        }
    }

    /// Starts sending the notice to every target that asked for its kind, and returns at
    /// once: the release goes on while it is sent.
    pub fn send(&self, notice: Notice) {
        let payload = Payload {
            text: format!("immune: fleet.{}: {}", notice.fleet, notice.text),
            notice: &notice,
            namespace: self.namespace.as_deref(),
            at: crate::state::now(),
        };
        let body = serde_json::to_string(&payload).expect("notices serialize");
        for (notify, sender) in &self.targets {
            if !notify.on.contains(&notice.kind) {
                continue;
            }
            let send = deliver(notify, sender, &notice, body.clone());
            let label = format!(
                "warning: notify \"{}\" ({}) did not get the {} notice of fleet.{}",
                notify.name,
                notify.target.shown(),
                notice.kind.as_str(),
                notice.fleet
            );
            let task = tokio::spawn(async move {
                match tokio::time::timeout(SEND_TIMEOUT, send).await {
                    Ok(Ok(())) => {}
                    Ok(Err(why)) => eprintln!("{label}: {why}"),
                    Err(_) => eprintln!("{label}: no answer within {}s", SEND_TIMEOUT.as_secs()),
                }
            });
            self.sending.lock().expect("not poisoned").push(task);
        }
    }

    /// Waits for the notices still on their way (each has its own timeout), so that a
    /// command that ends does not cut them off.
    pub async fn flush(&self) {
        let tasks: Vec<_> = self
            .sending
            .lock()
            .expect("not poisoned")
            .drain(..)
            .collect();
        for task in tasks {
            let _ = task.await;
        }
    }
}

/// Sends one notice to one target. Errors name the target's kind, never a webhook's
/// address, which may be its password.
fn deliver(
    notify: &Notify,
    sender: &Sender,
    notice: &Notice,
    body: String,
) -> BoxFuture<'static, Result<(), String>> {
    use aws_sdk_sns::types::MessageAttributeValue;
    let attribute = |value: &str| {
        MessageAttributeValue::builder()
            .data_type("String")
            .string_value(value)
            .build()
            .expect("data type is set")
    };
    match (sender, &notify.target) {
        (Sender::Sns(client), NotifyTarget::Sns { topic_arn }) => {
            let publish = client
                .publish()
                .topic_arn(topic_arn)
                .subject(notice.subject())
                .message(body)
                // Subscribers can filter on these (an SNS filter policy).
                .message_attributes("event", attribute(notice.kind.as_str()))
                .message_attributes("fleet", attribute(&notice.fleet));
            Box::pin(async move {
                publish
                    .send()
                    .await
                    .map(|_| ())
                    .map_err(|e| match e.as_service_error() {
                        Some(refused) => {
                            use aws_sdk_sns::error::ProvideErrorMetadata;
                            format!(
                                "SNS refused it: {}: {}",
                                refused.code().unwrap_or("Unknown"),
                                refused.message().unwrap_or_default()
                            )
                        }
                        None => crate::cloud::aws::error_chain(&e),
                    })
            })
        }
        (Sender::Webhook(client), NotifyTarget::Webhook { url }) => {
            let post = client
                .post(&url.0)
                .header("content-type", "application/json")
                .body(body);
            Box::pin(async move {
                // One more try after a refused connection or a server error; a 4xx is
                // the address's fault and will not get better.
                let mut last = String::new();
                for attempt in 0..2 {
                    if attempt > 0 {
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                    let Some(request) = post.try_clone() else {
                        break;
                    };
                    match request.send().await {
                        Ok(response) if response.status().is_success() => return Ok(()),
                        Ok(response) if response.status().is_client_error() => {
                            return Err(format!("the webhook answered {}", response.status()))
                        }
                        Ok(response) => {
                            last = format!("the webhook answered {}", response.status())
                        }
                        Err(e) => last = e.without_url().to_string(),
                    }
                }
                Err(last)
            })
        }
        _ => unreachable!("a sender is made for its target"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notice() -> Notice {
        Notice {
            kind: NoticeKind::RolledBack,
            fleet: "web".into(),
            text: "ROLLED BACK: gate errors failed".into(),
            release: Some("v3".into()),
            group: Some("web-v002".into()),
            locked: true,
        }
    }

    #[test]
    fn a_payload_has_a_text_for_chat_and_fields_for_programs() {
        let n = notice();
        let payload = Payload {
            text: "immune: fleet.web: ROLLED BACK".into(),
            notice: &n,
            namespace: Some("prod"),
            at: "2026-12-02T00:00:00Z".into(),
        };
        let value = serde_json::to_value(&payload).unwrap();
        assert_eq!(value["event"], "rolled_back");
        assert_eq!(value["fleet"], "web");
        assert_eq!(value["locked"], true);
        assert_eq!(value["namespace"], "prod");
        assert_eq!(value["text"], "immune: fleet.web: ROLLED BACK");
    }

    /// A webhook receiver on 127.0.0.1 that answers `status` and hands over each body.
    async fn receiver(status: u16) -> (String, tokio::sync::mpsc::UnboundedReceiver<String>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!(
            "http://{}/hooks/T000/secretpart",
            listener.local_addr().unwrap()
        );
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            loop {
                let (mut socket, _) = listener.accept().await.unwrap();
                let mut request = Vec::new();
                let mut buf = [0u8; 4096];
                // Headers, then as much body as Content-Length says.
                let body = loop {
                    let n = socket.read(&mut buf).await.unwrap();
                    request.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&request).to_string();
                    if let Some((head, body)) = text.split_once("\r\n\r\n") {
                        let length: usize = head
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length:")
                                    .map(|v| v.trim().parse().unwrap())
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
                tx.send(body).unwrap();
                let answer = format!(
                    "HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                );
                socket.write_all(answer.as_bytes()).await.unwrap();
            }
        });
        (url, rx)
    }

    fn webhook(url: &str) -> (Notify, Sender) {
        let notify = Notify {
            name: "chat".into(),
            target: NotifyTarget::Webhook {
                url: crate::config::Secret(url.to_string()),
            },
            on: NoticeKind::ALL.to_vec(),
        };
        (notify, Sender::Webhook(reqwest::Client::new()))
    }

    #[tokio::test]
    async fn a_webhook_receives_the_notice_as_json() {
        let (url, mut bodies) = receiver(200).await;
        let notifier = Notifier {
            targets: vec![webhook(&url)],
            namespace: Some("prod".into()),
            sending: Mutex::new(Vec::new()),
        };
        notifier.send(notice());
        notifier.flush().await;
        let body: serde_json::Value = serde_json::from_str(&bodies.recv().await.unwrap()).unwrap();
        assert_eq!(body["event"], "rolled_back");
        assert_eq!(body["fleet"], "web");
        assert_eq!(body["release"], "v3");
        assert_eq!(body["namespace"], "prod");
        assert!(
            body["text"].as_str().unwrap().contains("ROLLED BACK"),
            "{body}"
        );
    }

    #[tokio::test]
    async fn a_notice_of_a_kind_not_asked_for_is_not_sent() {
        let (url, mut bodies) = receiver(200).await;
        let (mut notify, sender) = webhook(&url);
        notify.on = vec![NoticeKind::AwaitingApproval];
        let notifier = Notifier {
            targets: vec![(notify, sender)],
            namespace: None,
            sending: Mutex::new(Vec::new()),
        };
        notifier.send(notice());
        notifier.flush().await;
        assert!(bodies.try_recv().is_err(), "a rolled_back notice was sent");
    }

    #[tokio::test]
    async fn a_failing_webhook_is_retried_once_and_named_without_its_address() {
        let (url, mut bodies) = receiver(503).await;
        let (notify, sender) = webhook(&url);
        let why = deliver(&notify, &sender, &notice(), "{}".into())
            .await
            .unwrap_err();
        assert!(why.contains("503"), "{why}");
        assert!(bodies.recv().await.is_some() && bodies.recv().await.is_some());

        // Nothing listens on the discard port: the connection is refused.
        let (notify, sender) = webhook("http://127.0.0.1:9/hooks/T000/secretpart");
        let why = deliver(&notify, &sender, &notice(), "{}".into())
            .await
            .unwrap_err();
        assert!(!why.contains("secretpart"), "the address leaked: {why}");
    }

    #[test]
    fn subjects_fit_sns() {
        let mut n = notice();
        n.fleet = "x".repeat(200);
        assert!(n.subject().len() <= 100);
        assert_eq!(notice().subject(), "immune: fleet.web rolled back");
    }
}
