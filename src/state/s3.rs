//! The S3 backend, for a team: the state is one object, the lock another beside it
//! (`<key>.lock`) and answers to a running apply more (`<key>.answers/<fleet>.json`).
//! There is no lock table: S3's conditional writes do the work. The lock is created only
//! if it is absent (`If-None-Match: *`), and the state is replaced only if it is still
//! the version this process read (`If-Match` on its ETag), so two writers never
//! interleave, even when someone breaks a lock that was still in use. A lock whose holder
//! is gone from this machine is replaced with `If-Match` on its ETag, so of two processes
//! taking it over only one succeeds.
//!
//! Unlike the local backend this one keeps no backup of the previous document: turn on
//! the bucket's versioning for that, which keeps every version, not only the last.

use super::lock::{self, Holder, LockInfo, Unlock};
use super::{Answer, Backend, LockGuard, State, StateError};
use crate::cloud::aws::{error_chain, sdk_config};
use async_trait::async_trait;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::Client;
use std::sync::Mutex;
use std::time::Duration;

pub struct S3Backend {
    client: Client,
    bucket: String,
    key: String,
    /// The state object's ETag as this process last read or wrote it; `None` when there
    /// was no object, so that the first save creates it only if nobody else has.
    etag: Mutex<Option<String>>,
}

impl S3Backend {
    /// Connects with the standard chain (credentials, `AWS_ENDPOINT_URL`). The bucket's
    /// `region` comes first, then `fallback_region` (`--region`), then the environment.
    pub async fn connect(
        bucket: &str,
        key: &str,
        region: Option<String>,
        fallback_region: Option<String>,
    ) -> Result<S3Backend, StateError> {
        let sdk = sdk_config(region.or(fallback_region)).await;
        if sdk.region().is_none() {
            return Err(StateError::Read {
                path: format!("s3://{bucket}/{key}"),
                message: "no region for the bucket: set `region` in backend \"s3\", pass --region or set AWS_REGION".into(),
            });
        }
        let mut config = aws_sdk_s3::config::Builder::from(&sdk);
        // Emulators and S3-compatible stores behind a custom endpoint (LocalStack, MinIO)
        // serve buckets by path: `bucket.127.0.0.1` does not resolve.
        if sdk.endpoint_url().is_some() || std::env::var_os("AWS_ENDPOINT_URL_S3").is_some() {
            config = config.force_path_style(true);
        }
        Ok(S3Backend::new(
            Client::from_conf(config.build()),
            bucket,
            key,
        ))
    }

    /// Over a client the caller configured (tests, other endpoints).
    pub fn new(client: Client, bucket: &str, key: &str) -> S3Backend {
        S3Backend {
            client,
            bucket: bucket.to_string(),
            key: key.to_string(),
            etag: Mutex::new(None),
        }
    }

    fn lock_key(&self) -> String {
        format!("{}.lock", self.key)
    }

    fn answer_key(&self, fleet: &str) -> String {
        format!("{}.answers/{fleet}.json", self.key)
    }

    fn place(&self) -> Place<'_> {
        Place {
            client: &self.client,
            bucket: &self.bucket,
        }
    }

    /// The guard for the lock `info` this process wrote, replacing `stale` if it did.
    fn guard(&self, info: &LockInfo, stale: Option<LockInfo>) -> LockGuard {
        let object = LockObject {
            client: self.client.clone(),
            bucket: self.bucket.clone(),
            key: self.lock_key(),
            id: info.id.clone(),
        };
        LockGuard::new(info.id.clone(), Box::new(object)).replacing(stale)
    }

    fn remember(&self, etag: Option<&str>) {
        *self.etag.lock().unwrap_or_else(|e| e.into_inner()) = etag.map(str::to_string);
    }
}

/// A bucket and the client to reach it: the object operations every part shares.
#[derive(Clone, Copy)]
struct Place<'a> {
    client: &'a Client,
    bucket: &'a str,
}

/// How a conditional write came back.
enum Put {
    Written {
        etag: Option<String>,
    },
    /// The condition failed: the object is not in the state the writer expected.
    Refused,
}

impl Place<'_> {
    fn url(&self, key: &str) -> String {
        format!("s3://{}/{key}", self.bucket)
    }

    /// The object's text and ETag, or `None` when there is no such object.
    async fn get(&self, key: &str) -> Result<Option<(String, Option<String>)>, StateError> {
        let failed = |message: String| StateError::Read {
            path: self.url(key),
            message,
        };
        let out = match self
            .client
            .get_object()
            .bucket(self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(out) => out,
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => return Ok(None),
            Err(e) => return Err(failed(explain(&e, self.bucket))),
        };
        let etag = out.e_tag().map(str::to_string);
        let bytes = out
            .body
            .collect()
            .await
            .map_err(|e| failed(error_chain(&e)))?
            .into_bytes();
        let text = String::from_utf8(bytes.to_vec())
            .map_err(|_| failed("the object is not UTF-8 text".into()))?;
        Ok(Some((text, etag)))
    }

    /// Writes `text` to `key` under a condition: `If-Match` on an ETag, or
    /// `If-None-Match: *` (create only) when `only_if` is `Condition::Absent`.
    async fn put(&self, key: &str, text: &str, only_if: Condition<'_>) -> Result<Put, StateError> {
        let mut put = self
            .client
            .put_object()
            .bucket(self.bucket)
            .key(key)
            .content_type("application/json")
            .body(ByteStream::from(text.as_bytes().to_vec()));
        put = match only_if {
            Condition::Absent => put.if_none_match("*"),
            Condition::Matches(etag) => put.if_match(etag),
            Condition::None => put,
        };
        match put.send().await {
            Ok(out) => Ok(Put::Written {
                etag: out.e_tag().map(str::to_string),
            }),
            Err(e) if refused(&e) => Ok(Put::Refused),
            Err(e) => Err(StateError::Write {
                path: self.url(key),
                message: explain(&e, self.bucket),
            }),
        }
    }

    async fn delete(&self, key: &str) -> Result<(), StateError> {
        self.client
            .delete_object()
            .bucket(self.bucket)
            .key(key)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| StateError::Write {
                path: self.url(key),
                message: explain(&e, self.bucket),
            })
    }
}

#[derive(Clone, Copy)]
enum Condition<'a> {
    Absent,
    Matches(&'a str),
    None,
}

/// A failed precondition: 412, or 409 when S3 saw a concurrent conditional write to the
/// same key. If-Match on an object that is gone is 404 NoSuchKey; for immune that too
/// means someone else changed it.
fn refused<E: ProvideErrorMetadata, R>(err: &SdkError<E, R>) -> bool {
    matches!(
        err.code(),
        Some("PreconditionFailed" | "ConditionalRequestConflict" | "NoSuchKey")
    )
}

/// The service's own words, with what to do for the usual mistakes. Never the request,
/// so never a credential.
fn explain<E, R>(err: &SdkError<E, R>, bucket: &str) -> String
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    match err.code() {
        Some("NoSuchBucket") => {
            format!("bucket `{bucket}` does not exist; create it first (immune does not create its backend's bucket)")
        }
        Some(code) => {
            let message = err.message().unwrap_or_default();
            let hint = match code {
                "AccessDenied" | "InvalidAccessKeyId" | "SignatureDoesNotMatch" => {
                    "\n  check the credentials in use and that they may read and write the bucket"
                }
                _ => "",
            };
            format!("{code}: {message}{hint}")
        }
        None => error_chain(err),
    }
}

#[async_trait]
impl Backend for S3Backend {
    fn describe(&self) -> String {
        self.place().url(&self.key)
    }

    async fn load(&self) -> Result<State, StateError> {
        match self.place().get(&self.key).await? {
            None => {
                self.remember(None);
                Ok(State::new())
            }
            Some((text, etag)) => {
                let state = super::decode(&text, &self.describe())?;
                self.remember(etag.as_deref());
                Ok(state)
            }
        }
    }

    async fn save(&self, state: &mut State) -> Result<(), StateError> {
        state.serial += 1;
        let text = super::encode(state);
        let expected = self.etag.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let only_if = match &expected {
            Some(etag) => Condition::Matches(etag),
            None => Condition::Absent,
        };
        let place = self.place();
        match place.put(&self.key, &text, only_if).await? {
            Put::Written { etag } => {
                self.remember(etag.as_deref());
                Ok(())
            }
            Put::Refused => {
                // The SDK retries a write whose answer was lost; the retry then finds
                // our own document in place. Only a different document is a conflict.
                match place.get(&self.key).await? {
                    Some((found, etag)) if found == text => {
                        self.remember(etag.as_deref());
                        Ok(())
                    }
                    _ => Err(StateError::Conflict {
                        path: self.describe(),
                    }),
                }
            }
        }
    }

    async fn lock(&self, operation: &str) -> Result<LockGuard, StateError> {
        let key = self.lock_key();
        let info = LockInfo::new(operation);
        let place = self.place();
        let mut taken_over = None;
        // A lock that vanishes between the refused write and the read was just
        // released, and one replaced under a takeover was taken by another process:
        // read again, a few times.
        for _ in 0..3 {
            let (text, etag) = match place.put(&key, &info.to_json(), Condition::Absent).await? {
                Put::Written { .. } => return Ok(self.guard(&info, taken_over)),
                Put::Refused => match place.get(&key).await? {
                    Some(found) => found,
                    None => continue,
                },
            };
            let held = LockInfo::read(&text).ok_or_else(|| StateError::CorruptLock {
                path: place.url(&key),
            })?;
            // A retried write that found its own first attempt.
            if held.id == info.id {
                return Ok(self.guard(&info, taken_over));
            }
            let (Holder::Gone, Some(etag)) = (held.holder(), etag) else {
                return Err(held.held());
            };
            // Remembered before the write: if its answer is lost and the SDK's retry is
            // refused, the next round finds this process's lock and reports it.
            taken_over = Some(held);
            if let Put::Written { .. } = place
                .put(&key, &info.to_json(), Condition::Matches(&etag))
                .await?
            {
                return Ok(self.guard(&info, taken_over));
            }
        }
        Err(StateError::Write {
            path: place.url(&key),
            message: "the lock was taken and released several times while immune tried to take it; try again".into(),
        })
    }

    async fn lock_holder(&self) -> Result<Option<LockInfo>, StateError> {
        let key = self.lock_key();
        let Some((text, _)) = self.place().get(&key).await? else {
            return Ok(None);
        };
        LockInfo::read(&text)
            .map(Some)
            .ok_or_else(|| StateError::CorruptLock {
                path: self.place().url(&key),
            })
    }

    async fn force_unlock(&self, id: &str) -> Result<(), StateError> {
        let key = self.lock_key();
        let Some((text, _)) = self.place().get(&key).await? else {
            return Err(StateError::NotLocked);
        };
        lock::may_break(&text, id, &self.place().url(&key))?;
        self.place().delete(&key).await
    }

    async fn post_answer(&self, fleet: &str, answer: &Answer) -> Result<(), StateError> {
        let key = self.answer_key(fleet);
        self.place()
            .put(&key, &answer.to_json(), Condition::None)
            .await
            .map(|_| ())
    }

    async fn pending_answer(&self, fleet: &str, group: &str) -> Result<Option<Answer>, StateError> {
        let key = self.answer_key(fleet);
        let Some((text, _)) = self.place().get(&key).await? else {
            return Ok(None);
        };
        let answer = Answer::parse_for(&text, group);
        if answer.is_none() {
            let _ = self.place().delete(&key).await;
        }
        Ok(answer)
    }

    async fn clear_answer(&self, fleet: &str) -> Result<(), StateError> {
        self.place().delete(&self.answer_key(fleet)).await
    }
}

/// The lock object this process created, to delete when the guard is released.
#[derive(Clone)]
struct LockObject {
    client: Client,
    bucket: String,
    key: String,
    id: String,
}

/// How long releasing from `Drop` may hold up the process's exit.
const DROP_RELEASE_LIMIT: Duration = Duration::from_secs(10);

#[async_trait]
impl Unlock for LockObject {
    /// Deletes the lock if it is still ours: after a `force-unlock` someone else's lock
    /// may stand there. (S3 can delete on a condition, but LocalStack does not implement
    /// it, so this reads first; the gap between the two calls is small.)
    async fn unlock(&self) -> Result<(), StateError> {
        let place = Place {
            client: &self.client,
            bucket: &self.bucket,
        };
        match place.get(&self.key).await? {
            Some((text, _)) if LockInfo::read(&text).is_some_and(|held| held.id == self.id) => {
                place.delete(&self.key).await
            }
            _ => Ok(()),
        }
    }

    /// Runs the release on a thread of its own with its own runtime, so it works from
    /// any context: inside a runtime (where blocking on it would deadlock), outside
    /// one, or while one shuts down. The client is rebuilt from its configuration so
    /// that no pooled connection belongs to the caller's runtime.
    fn unlock_blocking(&self) {
        let mut object = self.clone();
        let released = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            runtime.block_on(async {
                object.client = Client::from_conf(object.client.config().clone());
                match tokio::time::timeout(DROP_RELEASE_LIMIT, object.unlock()).await {
                    Ok(result) => result.map_err(|e| e.to_string()),
                    Err(_) => Err("timed out".into()),
                }
            })
        })
        .join();
        if let Ok(Err(message)) | Err(message) = released.map_err(|_| "panicked".to_string()) {
            tracing::warn!(
                "could not release the state lock {} at s3://{}/{}: {message}; run `immune state force-unlock {}`",
                self.id,
                self.bucket,
                self.key,
                self.id
            );
        }
    }
}
