//! Changes that need no new release: the running group brought back to the configured
//! capacity and traffic, and a fleet removed from the configuration retired.

use super::actions::{delete_release, set_stand_in, set_weights, Drain};
use super::{Engine, EngineError};
use crate::config::Fleet;
use crate::plan::{capacity_change, show_weights, Retire, Update};
use crate::state::{now, Decision, HistoryEntry};
use std::time::Duration;

/// How often a retiring fleet's deletions are checked: its configuration, and with it
/// its poll interval, is gone.
const RETIRE_POLL: Duration = Duration::from_secs(2);
const RETIRE_GRACE: Duration = Duration::from_secs(2 * 3600);

impl Engine<'_> {
    /// Sets the active group's capacity and the route's weights as planned.
    pub async fn update(&mut self, fleet: &Fleet, update: &Update) -> Result<(), EngineError> {
        let failed = |message: String| EngineError::Cloud {
            fleet: fleet.name.clone(),
            message,
        };
        if let Some(change) = &update.capacity {
            self.cloud
                .scale_group(&update.group, change.to)
                .await
                .map_err(|e| failed(e.to_string()))?;
            let recorded = self.state.fleets.get_mut(&fleet.name).expect("fleet state");
            if let Some(active) = recorded.active.as_mut() {
                active.capacity = Some(change.to);
            }
            self.backend.save(self.state).await?;
            self.reporter.line(
                &fleet.name,
                &format!(
                    "{}: {}",
                    update.group,
                    capacity_change(change.from, change.to)
                ),
            );
        }
        if let Some(change) = &update.weights {
            set_weights(self.cloud, &change.route, &change.to, None)
                .await
                .map_err(|h| failed(h.message()))?;
            self.reporter.line(
                &fleet.name,
                &format!("traffic set back to {}", show_weights(&change.to)),
            );
        }
        Ok(())
    }

    /// Gives the fleet's traffic back to where it went before immune (one verified
    /// call), then deletes each of its groups, saving state after every step. The
    /// fleet's history stays.
    pub async fn retire(&mut self, name: &str, retire: &Retire) -> Result<(), EngineError> {
        let unfinished = |message: String| EngineError::Unfinished {
            fleet: name.to_string(),
            message,
        };
        // A worker fleet has no route, and so nothing to give back.
        let route = retire.route.as_deref().unwrap_or_default();
        if let Some(stand_in) = &retire.stand_in {
            set_stand_in(self.cloud, route, stand_in)
                .await
                .map_err(|h| unfinished(h.message()))?;
            self.reporter.line(
                name,
                &format!("the route answers with {} again", stand_in.describe()),
            );
        }
        if !retire.restore.is_empty() {
            set_weights(self.cloud, route, &retire.restore, None)
                .await
                .map_err(|h| unfinished(h.message()))?;
            self.reporter.line(
                name,
                &format!("traffic back to {}", show_weights(&retire.restore)),
            );
        }
        let recorded = self.state.fleets.get_mut(name).expect("fleet state");
        let templates: std::collections::BTreeSet<String> = recorded
            .active
            .iter()
            .chain(&recorded.previous)
            .map(|g| g.launch_template.id.clone())
            .collect();
        let mut entry = HistoryEntry {
            group: recorded
                .active
                .as_ref()
                .map_or_else(String::new, |g| g.name.clone()),
            release: recorded
                .active
                .as_ref()
                .map_or_else(String::new, |g| g.release.clone()),
            started_at: now(),
            finished_at: None,
            outcome: "retired".into(),
            image_spec: String::new(),
            fingerprint: String::new(),
            gates: Default::default(),
            decisions: Vec::new(),
        };
        loop {
            let recorded = self.state.fleets.get_mut(name).expect("fleet state");
            let Some(group) = recorded
                .active
                .clone()
                .or(recorded.previous.first().cloned())
            else {
                break;
            };
            if group.target_group.is_none() {
                self.reporter.line(
                    name,
                    &format!(
                        "scaling {} in: its workers finish their jobs first",
                        group.name
                    ),
                );
            }
            delete_release(
                self.cloud,
                &group.name,
                &group.alarms,
                group.target_group.as_deref(),
                None,
                Drain {
                    // The configuration, and with it the fleet's grace, is gone: the
                    // longest a lifecycle hook can wait.
                    grace: RETIRE_GRACE,
                    poll: RETIRE_POLL,
                },
            )
            .await
            .map_err(|h| unfinished(h.message()))?;
            let recorded = self.state.fleets.get_mut(name).expect("fleet state");
            recorded.forget(&group);
            self.backend.save(self.state).await?;
            let what = format!("{} deleted: the fleet left the configuration", group.name);
            self.reporter.line(name, &what);
            entry.decisions.push(Decision {
                at: now(),
                what,
                evidence: None,
            });
        }
        // With every group gone the fleet's launch template has nothing left to launch;
        // left in place it would hold the fleet's name for good.
        for template in &templates {
            self.cloud
                .delete_launch_template(template)
                .await
                .map_err(|e| unfinished(e.to_string()))?;
            let what = format!("launch template {template} deleted");
            self.reporter.line(name, &what);
            entry.decisions.push(Decision {
                at: now(),
                what,
                evidence: None,
            });
        }
        entry.finished_at = Some(now());
        let recorded = self.state.fleets.get_mut(name).expect("fleet state");
        recorded.history.push(entry);
        recorded.lock = None;
        self.backend.save(self.state).await?;
        Ok(())
    }
}
