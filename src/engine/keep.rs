//! Housekeeping once a rollout finished: kept groups beyond `keep_previous` and baked
//! images beyond `image.keep` are removed. Never anything in use.

use super::actions::delete_release;
use super::Engine;
use crate::config::Fleet;
use std::collections::BTreeSet;

impl Engine<'_> {
    pub(super) async fn tidy(&mut self, fleet: &Fleet, promoted: bool) -> Result<(), String> {
        let keep = fleet.rollout.keep_previous as usize;
        let poll = fleet.rollout.poll_interval;
        loop {
            let recorded = self.state.fleets.get_mut(&fleet.name).expect("fleet state");
            if recorded.previous.len() <= keep {
                break;
            }
            let oldest = recorded.previous.last().cloned().expect("more than kept");
            self.reporter.line(
                &fleet.name,
                &format!("deleting {} beyond keep_previous = {keep}", oldest.name),
            );
            delete_release(
                self.cloud,
                &oldest.name,
                &oldest.alarms,
                oldest.target_group.as_deref(),
                Some(&oldest.launch_template),
                super::actions::Drain {
                    grace: fleet.instances.termination_grace,
                    poll,
                },
            )
            .await
            .map_err(|h| h.message())?;
            let recorded = self.state.fleets.get_mut(&fleet.name).expect("fleet state");
            recorded.previous.pop();
            self.note(
                &fleet.name,
                format!("{} deleted: more than {keep} groups kept", oldest.name),
                None,
            );
            self.save().await.map_err(|e| e.to_string())?;
        }
        if promoted {
            self.drop_old_images(fleet).await?;
        }
        self.terminate_leftover_builders(fleet).await
    }

    /// Builders an interrupted bake left running, found by this configuration's tags: no
    /// rollout is using them once the fleet's rollout has finished.
    async fn terminate_leftover_builders(&mut self, fleet: &Fleet) -> Result<(), String> {
        let builders = self
            .cloud
            .builders(&fleet.name)
            .await
            .map_err(|e| e.to_string())?;
        for builder in builders {
            // Found by the listing: not found by its id now, it has gone since.
            match self.cloud.terminate_instance(&builder.id).await {
                Err(e) if e.is_not_found() => {}
                other => other.map_err(|e| e.to_string())?,
            }
            self.note(
                &fleet.name,
                format!(
                    "builder {} ({}) left by an interrupted bake terminated",
                    builder.id, builder.name
                ),
                None,
            );
            self.save().await.map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    /// Deregisters the fleet's baked images beyond the newest `image.keep`, except those
    /// the active or kept groups run on: they are needed to scale out and to roll back.
    async fn drop_old_images(&mut self, fleet: &Fleet) -> Result<(), String> {
        let recorded = &self.state.fleets[&fleet.name];
        let in_use: BTreeSet<String> = recorded
            .active
            .iter()
            .chain(&recorded.previous)
            .map(|g| g.image.clone())
            .collect();
        let images = self
            .cloud
            .fleet_images(&fleet.name)
            .await
            .map_err(|e| e.to_string())?;
        let surplus = images.len().saturating_sub(fleet.image.keep as usize);
        for image in images.iter().take(surplus) {
            if in_use.contains(&image.id) {
                continue;
            }
            self.cloud
                .deregister_image(&image.id)
                .await
                .map_err(|e| e.to_string())?;
            self.note(
                &fleet.name,
                format!(
                    "image {} deregistered with its snapshots (image.keep = {})",
                    image.id, fleet.image.keep
                ),
                None,
            );
            self.save().await.map_err(|e| e.to_string())?;
        }
        Ok(())
    }
}
