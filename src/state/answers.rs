//! Answers from operators to a running apply: approve or reject a manual gate, or roll
//! the release back. The apply holds the state lock for as long as it runs, so answers
//! travel beside the state, one small file per fleet, and the apply reads them at every
//! poll. An answer nobody was waiting for is picked up by the next apply that resumes.
//! Each backend stores them its own way; reading them back is the same for all.

use super::local::{write_atomically, LocalBackend};
use super::StateError;
use serde::{Deserialize, Serialize};
use std::fs;
use std::path::PathBuf;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AnswerKind {
    Approve,
    Reject,
    Rollback,
    /// Hold the rollout at its current step: it does not pass until resumed.
    Pause,
    Resume,
    /// Pass the current step now, its pause cut short.
    Promote,
    /// Pass the current step and every one after it as soon as their gates allow.
    PromoteFull,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Answer {
    pub kind: AnswerKind,
    /// The group the answer is about, so that it cannot apply to a later release.
    pub group: String,
    pub by: String,
    pub at: String,
}

impl Answer {
    pub(super) fn to_json(&self) -> String {
        serde_json::to_string(self).expect("answers serialize")
    }

    /// The stored answer if it is about `group`. One about another group (an earlier
    /// release) or one that cannot be read is stale: the caller drops it.
    pub(super) fn parse_for(text: &str, group: &str) -> Option<Answer> {
        serde_json::from_str::<Answer>(text)
            .ok()
            .filter(|a| a.group == group)
    }
}

impl LocalBackend {
    pub(super) fn answers_dir(&self) -> PathBuf {
        self.dir().join("answers")
    }

    fn answer_path(&self, fleet: &str) -> PathBuf {
        self.answers_dir().join(format!("{fleet}.json"))
    }

    pub fn post_answer(&self, fleet: &str, answer: &Answer) -> Result<(), StateError> {
        write_atomically(&self.answer_path(fleet), &answer.to_json())
    }

    pub fn pending_answer(&self, fleet: &str, group: &str) -> Result<Option<Answer>, StateError> {
        let path = self.answer_path(fleet);
        let text = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(StateError::Read {
                    path: path.display().to_string(),
                    message: e.to_string(),
                })
            }
        };
        let answer = Answer::parse_for(&text, group);
        if answer.is_none() {
            let _ = fs::remove_file(&path);
        }
        Ok(answer)
    }

    pub fn clear_answer(&self, fleet: &str) -> Result<(), StateError> {
        match fs::remove_file(self.answer_path(fleet)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(StateError::Write {
                path: self.answer_path(fleet).display().to_string(),
                message: e.to_string(),
            }),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_waits_until_cleared_and_only_for_its_group() {
        let dir = std::env::temp_dir().join(format!("immune-answers-{}", uuid::Uuid::new_v4()));
        let backend = LocalBackend::new(dir.join("state.json"));
        let answer = |group: &str| Answer {
            kind: AnswerKind::Approve,
            group: group.into(),
            by: "ops".into(),
            at: "now".into(),
        };
        backend.post_answer("web", &answer("web-v002")).unwrap();
        for _ in 0..2 {
            assert_eq!(
                backend.pending_answer("web", "web-v002").unwrap(),
                Some(answer("web-v002"))
            );
        }
        backend.clear_answer("web").unwrap();
        assert_eq!(backend.pending_answer("web", "web-v002").unwrap(), None);
        backend.post_answer("web", &answer("web-v001")).unwrap();
        assert_eq!(backend.pending_answer("web", "web-v002").unwrap(), None);
        assert_eq!(
            backend.pending_answer("web", "web-v001").unwrap(),
            None,
            "a stale answer is dropped"
        );
        fs::remove_dir_all(dir).unwrap();
    }
}
