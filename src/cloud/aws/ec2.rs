//! Images, builder instances, subnets and launch templates (EC2).

use super::*;
use crate::config::{Metadata, RootVolume};
use aws_sdk_ec2::types::{
    Filter, HttpTokensState, IamInstanceProfileSpecification, InstanceMetadataOptionsRequest,
    InstanceStateName, LaunchTemplateBlockDeviceMappingRequest,
    LaunchTemplateEbsBlockDeviceRequest, LaunchTemplateHttpTokensState,
    LaunchTemplateIamInstanceProfileSpecificationRequest,
    LaunchTemplateInstanceMetadataOptionsRequest, LaunchTemplateTagSpecificationRequest,
    RequestLaunchTemplateData, ResourceType, ShutdownBehavior, Tag, TagSpecification, VolumeType,
};

/// `name` or `arn:...`: which field of a profile specification it goes in.
fn is_arn(profile: &str) -> bool {
    profile.starts_with("arn:")
}

fn ec2_tags(tags: &Tags) -> Vec<Tag> {
    tags.pairs()
        .into_iter()
        .map(|(k, v)| Tag::builder().key(k).value(v).build())
        .collect()
}

fn tag_spec(resource: ResourceType, tags: Vec<Tag>) -> TagSpecification {
    TagSpecification::builder()
        .resource_type(resource)
        .set_tags(Some(tags))
        .build()
}

fn pairs(tags: &[Tag]) -> impl Iterator<Item = (Option<&str>, Option<&str>)> {
    tags.iter().map(|t| (t.key(), t.value()))
}

fn filter(name: impl Into<String>, value: &str) -> Filter {
    Filter::builder().name(name).values(value).build()
}

fn tag_value(tags: &[Tag], key: &str) -> String {
    tags.iter()
        .find(|t| t.key() == Some(key))
        .and_then(|t| t.value())
        .unwrap_or_default()
        .to_string()
}

fn image_state(state: Option<&aws_sdk_ec2::types::ImageState>) -> ImageState {
    use aws_sdk_ec2::types::ImageState as S;
    match state {
        Some(S::Available) => ImageState::Available,
        Some(S::Pending) | None => ImageState::Pending,
        Some(_) => ImageState::Failed,
    }
}

impl Aws {
    pub(super) async fn source_image_exists(&self, image_id: &str) -> CloudResult<bool> {
        let result = self.ec2.describe_images().image_ids(image_id).send().await;
        match result.map_err(|e| sdk_error("DescribeImages", e)) {
            Ok(out) => Ok(!out.images().is_empty()),
            Err(e) if code_of(&e).is_some_and(|c| c.starts_with("InvalidAMIID")) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The source images among `ids` that exist, in calls of 200.
    pub(super) async fn source_images(&self, ids: &[String]) -> CloudResult<BTreeSet<String>> {
        let mut found = BTreeSet::new();
        for chunk in ids.chunks(200) {
            found.extend(self.existing_images(chunk).await?);
        }
        Ok(found)
    }

    /// A filter on `subnet-id`, unlike `SubnetIds`, does not fail the call for a subnet
    /// that does not exist.
    pub(super) async fn subnet_vpcs(
        &self,
        ids: &[String],
    ) -> CloudResult<BTreeMap<String, String>> {
        let mut found = BTreeMap::new();
        for chunk in ids.chunks(200) {
            let out = self
                .ec2
                .describe_subnets()
                .filters(
                    Filter::builder()
                        .name("subnet-id")
                        .set_values(Some(chunk.to_vec()))
                        .build(),
                )
                .send()
                .await
                .map_err(|e| sdk_error("DescribeSubnets", e))?;
            found.extend(vpcs_of(out.subnets()));
        }
        self.remember_vpcs(found.iter().map(|(s, v)| (s.clone(), v.clone())));
        Ok(found)
    }

    fn remember_vpcs(&self, found: impl IntoIterator<Item = (String, String)>) {
        self.subnet_vpcs.lock().unwrap().extend(found);
    }

    pub(super) async fn key_pairs(&self, names: &[String]) -> CloudResult<BTreeSet<String>> {
        let mut found = BTreeSet::new();
        for chunk in names.chunks(200) {
            let out = self
                .ec2
                .describe_key_pairs()
                .filters(
                    Filter::builder()
                        .name("key-name")
                        .set_values(Some(chunk.to_vec()))
                        .build(),
                )
                .send()
                .await
                .map_err(|e| sdk_error("DescribeKeyPairs", e))?;
            found.extend(
                out.key_pairs()
                    .iter()
                    .filter_map(|k| k.key_name().map(str::to_string)),
            );
        }
        Ok(found)
    }

    /// This configuration's images of all the fleets named, in calls of 200 fleets.
    pub(super) async fn baked_images(
        &self,
        wanted: &[(String, String)],
    ) -> CloudResult<BTreeMap<String, Image>> {
        let mut found = BTreeMap::new();
        for chunk in wanted.chunks(200) {
            let fleets: Vec<String> = chunk.iter().map(|(f, _)| f.clone()).collect();
            let out = self
                .ec2
                .describe_images()
                .owners("self")
                .filters(filter(format!("tag:{TAG_LINEAGE}"), &self.lineage))
                .filters(
                    Filter::builder()
                        .name(format!("tag:{TAG_FLEET}"))
                        .set_values(Some(fleets))
                        .build(),
                )
                .send()
                .await
                .map_err(|e| sdk_error("DescribeImages", e))?;
            for i in out.images() {
                let tag = |key: &str| {
                    i.tags()
                        .iter()
                        .find(|t| t.key() == Some(key))
                        .and_then(|t| t.value())
                };
                let (Some(fleet), Some(bake)) = (tag(TAG_FLEET), tag(TAG_BAKE)) else {
                    continue;
                };
                let image = Image {
                    id: i.image_id().unwrap_or_default().to_string(),
                    state: image_state(i.state()),
                };
                if chunk.iter().any(|(f, b)| f == fleet && b == bake)
                    && self.holder(pairs(i.tags())) == Holder::Ours
                    && image.state != ImageState::Failed
                {
                    found.entry(fleet.to_string()).or_insert(image);
                }
            }
        }
        Ok(found)
    }

    /// The account's images of these names, with who holds each, in calls of 200.
    pub(super) async fn images_named(
        &self,
        names: &[String],
    ) -> CloudResult<BTreeMap<String, (Image, Holder)>> {
        let mut found = BTreeMap::new();
        for chunk in names.chunks(200) {
            let out = self
                .ec2
                .describe_images()
                .owners("self")
                .filters(
                    Filter::builder()
                        .name("name")
                        .set_values(Some(chunk.to_vec()))
                        .build(),
                )
                .send()
                .await
                .map_err(|e| sdk_error("DescribeImages", e))?;
            for i in out.images() {
                if i.state() == Some(&aws_sdk_ec2::types::ImageState::Deregistered) {
                    continue;
                }
                let Some(name) = i.name() else { continue };
                let image = Image {
                    id: i.image_id().unwrap_or_default().to_string(),
                    state: image_state(i.state()),
                };
                found
                    .entry(name.to_string())
                    .or_insert((image, self.holder(pairs(i.tags()))));
            }
        }
        Ok(found)
    }

    /// Who holds the launch templates of these names, in calls of 200.
    pub(super) async fn launch_template_holders(
        &self,
        names: &[String],
    ) -> CloudResult<BTreeMap<String, Holder>> {
        let mut found = BTreeMap::new();
        for chunk in names.chunks(200) {
            let mut token = None;
            loop {
                let out = self
                    .ec2
                    .describe_launch_templates()
                    .filters(
                        Filter::builder()
                            .name("launch-template-name")
                            .set_values(Some(chunk.to_vec()))
                            .build(),
                    )
                    .set_next_token(token)
                    .send()
                    .await
                    .map_err(|e| sdk_error("DescribeLaunchTemplates", e))?;
                for t in out.launch_templates() {
                    if let Some(name) = t.launch_template_name() {
                        found.insert(name.to_string(), self.holder(pairs(t.tags())));
                    }
                }
                token = out.next_token().map(str::to_string);
                if token.is_none() {
                    break;
                }
            }
        }
        Ok(found)
    }

    pub(super) async fn find_baked_image(
        &self,
        fleet: &str,
        bake: &str,
    ) -> CloudResult<Option<Image>> {
        // Only this configuration's images: another one's may be deregistered by it at any
        // time (its image.keep), and was never checked against this one's spec.
        let out = self
            .ec2
            .describe_images()
            .owners("self")
            .filters(filter(format!("tag:{TAG_LINEAGE}"), &self.lineage))
            .filters(filter(format!("tag:{TAG_FLEET}"), fleet))
            .filters(filter(format!("tag:{TAG_BAKE}"), bake))
            .send()
            .await
            .map_err(|e| sdk_error("DescribeImages", e))?;
        Ok(out
            .images()
            .iter()
            .filter(|i| self.holder(pairs(i.tags())) == Holder::Ours)
            .map(|i| Image {
                id: i.image_id().unwrap_or_default().to_string(),
                state: image_state(i.state()),
            })
            .find(|i| i.state != ImageState::Failed))
    }

    pub(super) async fn fleet_images(&self, fleet: &str) -> CloudResult<Vec<BakedImage>> {
        let out = self
            .ec2
            .describe_images()
            .owners("self")
            .filters(filter(format!("tag:{TAG_LINEAGE}"), &self.lineage))
            .filters(filter(format!("tag:{TAG_FLEET}"), fleet))
            .send()
            .await
            .map_err(|e| sdk_error("DescribeImages", e))?;
        let mut images: Vec<BakedImage> = out
            .images()
            .iter()
            .filter(|i| self.holder(pairs(i.tags())) == Holder::Ours)
            .map(|i| BakedImage {
                id: i.image_id().unwrap_or_default().to_string(),
                name: tag_value(i.tags(), "Name"),
                created: i.creation_date().unwrap_or_default().to_string(),
            })
            .collect();
        // CreationDate can have whole seconds only (moto's has), so images baked within one
        // second are ordered by their `Name` tag, the group that baked them: zero-padded
        // `web-v002` names order by length, then text, as their sequence numbers do.
        images.sort_by(|a, b| {
            let order = |i: &BakedImage| (i.created.clone(), i.name.len(), i.name.clone());
            order(a).cmp(&order(b)).then(a.id.cmp(&b.id))
        });
        Ok(images)
    }

    /// Deregisters the image with its snapshots: DeleteAssociatedSnapshots does both in
    /// one call (DeregisterImage in the EC2 API reference), and says per snapshot what
    /// became of it. One it did not delete is deleted after, asked again while EC2 still
    /// counts it in use by the image just deregistered.
    pub(super) async fn deregister_image(&self, image_id: &str) -> CloudResult<()> {
        // Deregistered long after it was made: not found means gone.
        let image = match self.describe_image(image_id).await {
            Ok(Some(image)) => image,
            Ok(None) => return Ok(()),
            Err(e) if e.is_not_found() => return Ok(()),
            Err(e) => return Err(e),
        };
        self.ensure_ours(format!("image {image_id}"), pairs(image.tags()))?;
        let out = self
            .ec2
            .deregister_image()
            .image_id(image_id)
            .delete_associated_snapshots(true)
            .send()
            .await
            .map_err(|e| sdk_error("DeregisterImage", e))?;
        let deleted: BTreeSet<&str> = out
            .delete_snapshot_results()
            .iter()
            .filter(|r| r.return_code().map(|c| c.as_str()) == Some("success"))
            .filter_map(|r| r.snapshot_id())
            .collect();
        let left = image
            .block_device_mappings()
            .iter()
            .filter_map(|m| m.ebs()?.snapshot_id())
            .filter(|s| !deleted.contains(s));
        // The snapshots belong to the image immune baked; without it they only cost money.
        for snapshot in left {
            self.delete_snapshot(snapshot).await?;
        }
        Ok(())
    }

    /// Deletes a snapshot of an image just deregistered: EC2 may still count it in use
    /// for a moment (InvalidSnapshot.InUse), so it is asked again for a while; one
    /// already gone is fine.
    async fn delete_snapshot(&self, snapshot: &str) -> CloudResult<()> {
        let in_use = |e: &CloudError| code_of(e) == Some("InvalidSnapshot.InUse");
        let deleted = retry_while(CONSISTENCY, in_use, || async {
            self.ec2
                .delete_snapshot()
                .snapshot_id(snapshot)
                .send()
                .await
                .map_err(|e| sdk_error("DeleteSnapshot", e))
        })
        .await;
        match deleted {
            Err(e) if e.is_not_found() => Ok(()),
            other => other.map(|_| ()),
        }
    }

    pub(super) async fn launch_builder(&self, request: &BuilderRequest) -> CloudResult<String> {
        let mut builder_tags = ec2_tags(&request.tags);
        builder_tags.push(Tag::builder().key(TAG_ROLE).value("builder").build());
        let profile = request.iam_instance_profile.as_deref().map(|p| {
            let spec = IamInstanceProfileSpecification::builder();
            if is_arn(p) {
                spec.arn(p).build()
            } else {
                spec.name(p).build()
            }
        });
        let Metadata {
            tokens_required,
            hop_limit,
        } = request.metadata;
        let out = self
            .ec2
            .run_instances()
            .image_id(&request.source_ami)
            .instance_type(request.instance_type.as_str().into())
            .min_count(1)
            .max_count(1)
            .subnet_id(&request.subnet)
            .set_security_group_ids(Some(request.security_groups.clone()))
            .set_user_data(request.user_data.as_deref().map(base64))
            .set_iam_instance_profile(profile)
            // The provision script ends by powering the builder off: that must stop it,
            // not terminate it, so that the image can be taken from its disk.
            .instance_initiated_shutdown_behavior(ShutdownBehavior::Stop)
            .metadata_options(
                InstanceMetadataOptionsRequest::builder()
                    .http_tokens(if tokens_required {
                        HttpTokensState::Required
                    } else {
                        HttpTokensState::Optional
                    })
                    .http_put_response_hop_limit(hop_limit as i32)
                    .build(),
            )
            .tag_specifications(tag_spec(ResourceType::Instance, builder_tags.clone()))
            .tag_specifications(tag_spec(ResourceType::Volume, builder_tags))
            .send()
            .await
            .map_err(|e| sdk_error("RunInstances", e))?;
        out.instances()
            .first()
            .and_then(|i| i.instance_id())
            .map(str::to_string)
            .ok_or_else(|| CloudError::Invalid("RunInstances returned no instance".into()))
    }

    pub(super) async fn instance_state(&self, instance_id: &str) -> CloudResult<InstanceState> {
        let out = self
            .ec2
            .describe_instances()
            .instance_ids(instance_id)
            .send()
            .await
            .map_err(|e| sdk_error("DescribeInstances", e))
            .map_err(|e| match code_of(&e) {
                Some("InvalidInstanceID.NotFound") => {
                    CloudError::NotFound(format!("instance {instance_id}"))
                }
                _ => e,
            })?;
        let state = out
            .reservations()
            .iter()
            .flat_map(|r| r.instances())
            .find_map(|i| i.state().and_then(|s| s.name()).cloned())
            .ok_or_else(|| CloudError::NotFound(format!("instance {instance_id}")))?;
        Ok(match state {
            InstanceStateName::Pending => InstanceState::Pending,
            InstanceStateName::Running => InstanceState::Running,
            InstanceStateName::Stopping => InstanceState::Stopping,
            InstanceStateName::Stopped => InstanceState::Stopped,
            _ => InstanceState::Terminated,
        })
    }

    pub(super) async fn console_output(&self, instance_id: &str) -> CloudResult<String> {
        // The newest output is offered on Nitro instances only; elsewhere EC2 refuses
        // `Latest` and the last buffered output is read instead (GetConsoleOutput in the
        // EC2 API reference).
        let read = |latest: bool| {
            self.ec2
                .get_console_output()
                .instance_id(instance_id)
                .latest(latest)
                .send()
        };
        let out = match read(true)
            .await
            .map_err(|e| sdk_error("GetConsoleOutput", e))
        {
            Err(e) if code_of(&e).is_some_and(|c| c.starts_with("Unsupported")) => read(false)
                .await
                .map_err(|e| sdk_error("GetConsoleOutput", e))?,
            other => other?,
        };
        let Some(encoded) = out.output() else {
            return Ok(String::new());
        };
        use base64::Engine as _;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .unwrap_or_else(|_| encoded.as_bytes().to_vec());
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    pub(super) async fn create_image(
        &self,
        builder: &str,
        name: &str,
        bake: &str,
        tags: &Tags,
    ) -> CloudResult<String> {
        let mut image_tags = ec2_tags(tags);
        image_tags.push(Tag::builder().key(TAG_BAKE).value(bake).build());
        let out = self
            .ec2
            .create_image()
            .instance_id(builder)
            .name(name)
            .description(format!("baked by immune for fleet {}", tags.fleet))
            // The snapshots carry the lineage too: found and deleted with the image.
            .tag_specifications(tag_spec(ResourceType::Image, image_tags.clone()))
            .tag_specifications(tag_spec(ResourceType::Snapshot, image_tags))
            .send()
            .await
            .map_err(|e| sdk_error("CreateImage", e));
        match out {
            // A CreateImage whose answer was lost made the image: image names are unique
            // in an account, and this one is ours, of the same bake.
            Err(e) if code_of(&e) == Some("InvalidAMIName.Duplicate") => {
                self.baked_image_named(name, bake).await?.ok_or(e)
            }
            other => other?
                .image_id()
                .map(str::to_string)
                .ok_or_else(|| CloudError::Invalid("CreateImage returned no image id".into())),
        }
    }

    /// This configuration's image of this name baked from `bake`, if there is one.
    async fn baked_image_named(&self, name: &str, bake: &str) -> CloudResult<Option<String>> {
        let out = self
            .ec2
            .describe_images()
            .owners("self")
            .filters(Filter::builder().name("name").values(name).build())
            .send()
            .await
            .map_err(|e| sdk_error("DescribeImages", e))?;
        Ok(out
            .images()
            .iter()
            .find(|i| {
                let tags = i.tags();
                self.holder(pairs(tags)) == Holder::Ours
                    && tags
                        .iter()
                        .any(|t| t.key() == Some(TAG_BAKE) && t.value() == Some(bake))
            })
            .and_then(|i| i.image_id())
            .map(str::to_string))
    }

    async fn describe_image(
        &self,
        image_id: &str,
    ) -> CloudResult<Option<aws_sdk_ec2::types::Image>> {
        let out = self
            .ec2
            .describe_images()
            .image_ids(image_id)
            .send()
            .await
            .map_err(|e| sdk_error("DescribeImages", e))?;
        Ok(out.images().first().cloned())
    }

    pub(super) async fn image(&self, image_id: &str) -> CloudResult<Image> {
        self.describe_image(image_id)
            .await?
            .map(|i| Image {
                id: image_id.to_string(),
                state: image_state(i.state()),
            })
            .ok_or_else(|| CloudError::NotFound(format!("image {image_id}")))
    }

    /// A filter on `image-id`, unlike `ImageIds`, does not fail the call for an image
    /// that is gone.
    pub(super) async fn existing_images(&self, ids: &[String]) -> CloudResult<BTreeSet<String>> {
        if ids.is_empty() {
            return Ok(BTreeSet::new());
        }
        let out = self
            .ec2
            .describe_images()
            .filters(
                Filter::builder()
                    .name("image-id")
                    .set_values(Some(ids.to_vec()))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| sdk_error("DescribeImages", e))?;
        Ok(out
            .images()
            .iter()
            .filter(|i| i.state() != Some(&aws_sdk_ec2::types::ImageState::Deregistered))
            .filter_map(|i| i.image_id().map(str::to_string))
            .collect())
    }

    pub(super) async fn terminate_instance(&self, instance_id: &str) -> CloudResult<()> {
        let out = self
            .ec2
            .describe_instances()
            .instance_ids(instance_id)
            .send()
            .await
            .map_err(|e| sdk_error("DescribeInstances", e));
        let tags: Vec<Tag> = match out {
            Ok(out) => out
                .reservations()
                .iter()
                .flat_map(|r| r.instances())
                .flat_map(|i| i.tags().to_vec())
                .collect(),
            // Not necessarily gone: EC2 is eventually consistent, and an instance launched
            // a moment ago may not be found yet. The caller decides.
            Err(e) if code_of(&e) == Some("InvalidInstanceID.NotFound") => {
                return Err(CloudError::NotFound(format!("instance {instance_id}")))
            }
            Err(e) => return Err(e),
        };
        self.ensure_ours(format!("instance {instance_id}"), pairs(&tags))?;
        self.ec2
            .terminate_instances()
            .instance_ids(instance_id)
            .send()
            .await
            .map_err(|e| sdk_error("TerminateInstances", e))?;
        Ok(())
    }

    /// All types in one call (100 a call); since one unknown type fails the whole call,
    /// a call that fails so is asked again one type at a time.
    pub(super) async fn unknown_instance_types(
        &self,
        types: &[String],
    ) -> CloudResult<Vec<String>> {
        let mut unknown = Vec::new();
        for chunk in types.chunks(100) {
            match self.offered_instance_types(chunk).await {
                Ok(offered) => {
                    unknown.extend(chunk.iter().filter(|t| !offered.contains(*t)).cloned())
                }
                Err(e) if code_of(&e).is_some_and(|c| c.starts_with("InvalidInstanceType")) => {
                    for t in chunk {
                        match self.offered_instance_types(std::slice::from_ref(t)).await {
                            Ok(offered) if offered.contains(t) => {}
                            Ok(_) => unknown.push(t.clone()),
                            Err(e)
                                if code_of(&e)
                                    .is_some_and(|c| c.starts_with("InvalidInstanceType")) =>
                            {
                                unknown.push(t.clone())
                            }
                            Err(e) => return Err(e),
                        }
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Ok(unknown)
    }

    async fn offered_instance_types(&self, types: &[String]) -> CloudResult<BTreeSet<String>> {
        let out = self
            .ec2
            .describe_instance_types()
            .set_instance_types(Some(types.iter().map(|t| t.as_str().into()).collect()))
            .send()
            .await
            .map_err(|e| sdk_error("DescribeInstanceTypes", e))?;
        Ok(out
            .instance_types()
            .iter()
            .filter_map(|t| t.instance_type().map(|t| t.as_str().to_string()))
            .collect())
    }

    pub(super) async fn key_pair_exists(&self, name: &str) -> CloudResult<bool> {
        let out = self
            .ec2
            .describe_key_pairs()
            .key_names(name)
            .send()
            .await
            .map_err(|e| sdk_error("DescribeKeyPairs", e));
        match out {
            Ok(out) => Ok(!out.key_pairs().is_empty()),
            Err(e) if code_of(&e).is_some_and(|c| c.starts_with("InvalidKeyPair")) => Ok(false),
            Err(e) => Err(e),
        }
    }

    pub(super) async fn vpc_of_subnets(&self, subnets: &[String]) -> CloudResult<String> {
        let known: Option<BTreeSet<String>> = {
            let seen = self.subnet_vpcs.lock().unwrap();
            subnets.iter().map(|s| seen.get(s).cloned()).collect()
        };
        if let Some(vpcs) = known.filter(|v| !v.is_empty()) {
            return one_vpc(subnets, vpcs.iter().map(String::as_str).collect());
        }
        let out = self
            .ec2
            .describe_subnets()
            .set_subnet_ids(Some(subnets.to_vec()))
            .send()
            .await
            .map_err(|e| sdk_error("DescribeSubnets", e))
            .map_err(|e| match code_of(&e) {
                Some("InvalidSubnetID.NotFound") => {
                    CloudError::NotFound(format!("subnet(s) {}", subnets.join(", ")))
                }
                _ => e,
            })?;
        self.remember_vpcs(vpcs_of(out.subnets()));
        one_vpc(
            subnets,
            out.subnets().iter().filter_map(|s| s.vpc_id()).collect(),
        )
    }

    pub(super) async fn create_launch_template_version(
        &self,
        request: &LaunchRequest,
    ) -> CloudResult<LaunchTemplateRef> {
        let tags_on = |resource| {
            LaunchTemplateTagSpecificationRequest::builder()
                .resource_type(resource)
                .set_tags(Some(ec2_tags(&request.tags)))
                .build()
        };
        let profile = request.iam_instance_profile.as_deref().map(|p| {
            let spec = LaunchTemplateIamInstanceProfileSpecificationRequest::builder();
            if is_arn(p) {
                spec.arn(p).build()
            } else {
                spec.name(p).build()
            }
        });
        let root = match &request.root_volume {
            Some(volume) => Some(self.root_volume(&request.image_id, volume).await?),
            None => None,
        };
        let Metadata {
            tokens_required,
            hop_limit,
        } = request.metadata;
        let data = RequestLaunchTemplateData::builder()
            .image_id(&request.image_id)
            .instance_type(request.instance_type.as_str().into())
            .set_security_group_ids(Some(request.security_groups.clone()))
            .set_user_data(request.user_data.as_deref().map(base64))
            .set_iam_instance_profile(profile)
            .set_key_name(request.key_name.clone())
            .set_block_device_mappings(root.map(|r| vec![r]))
            .metadata_options(
                LaunchTemplateInstanceMetadataOptionsRequest::builder()
                    .http_tokens(if tokens_required {
                        LaunchTemplateHttpTokensState::Required
                    } else {
                        LaunchTemplateHttpTokensState::Optional
                    })
                    .http_put_response_hop_limit(hop_limit as i32)
                    .build(),
            )
            .tag_specifications(tags_on(ResourceType::Instance))
            .tag_specifications(tags_on(ResourceType::Volume))
            .build();
        match self.launch_template(&request.template_name).await? {
            None => {
                let mut template_tags = ec2_tags(&request.tags);
                template_tags.retain(|t| t.key() != Some(TAG_RELEASE));
                let out = self
                    .ec2
                    .create_launch_template()
                    .launch_template_name(&request.template_name)
                    .version_description(&request.tags.name)
                    .launch_template_data(data)
                    .tag_specifications(tag_spec(ResourceType::LaunchTemplate, template_tags))
                    .send()
                    .await
                    .map_err(|e| sdk_error("CreateLaunchTemplate", e))?;
                let template = out.launch_template().ok_or_else(|| {
                    CloudError::Invalid("CreateLaunchTemplate returned nothing".into())
                })?;
                Ok(LaunchTemplateRef {
                    id: template
                        .launch_template_id()
                        .unwrap_or_default()
                        .to_string(),
                    version: template.latest_version_number().unwrap_or(1),
                })
            }
            Some(template) => {
                self.ensure_ours(
                    format!("launch template {}", request.template_name),
                    pairs(template.tags()),
                )?;
                let id = template
                    .launch_template_id()
                    .unwrap_or_default()
                    .to_string();
                let out = self
                    .ec2
                    .create_launch_template_version()
                    .launch_template_id(&id)
                    .version_description(&request.tags.name)
                    .launch_template_data(data)
                    .send()
                    .await
                    .map_err(|e| sdk_error("CreateLaunchTemplateVersion", e))?;
                let version = out
                    .launch_template_version()
                    .and_then(|v| v.version_number())
                    .ok_or_else(|| {
                        CloudError::Invalid(
                            "CreateLaunchTemplateVersion returned no version".into(),
                        )
                    })?;
                Ok(LaunchTemplateRef { id, version })
            }
        }
    }

    /// The root volume's mapping: its device name is the image's root device
    /// (`/dev/xvda`, `/dev/sda1`), so that the setting replaces the image's own volume
    /// instead of adding a second one.
    async fn root_volume(
        &self,
        image_id: &str,
        volume: &RootVolume,
    ) -> CloudResult<LaunchTemplateBlockDeviceMappingRequest> {
        let device = self
            .describe_image(image_id)
            .await?
            .and_then(|i| i.root_device_name().map(str::to_string))
            .unwrap_or_else(|| "/dev/xvda".into());
        let ebs = LaunchTemplateEbsBlockDeviceRequest::builder()
            .set_volume_size(volume.size.map(|s| s as i32))
            .set_volume_type(volume.volume_type.as_deref().map(VolumeType::from))
            .set_encrypted(volume.encrypted)
            .set_iops(volume.iops.map(|i| i as i32))
            .set_throughput(volume.throughput.map(|t| t as i32))
            .delete_on_termination(true)
            .build();
        Ok(LaunchTemplateBlockDeviceMappingRequest::builder()
            .device_name(device)
            .ebs(ebs)
            .build())
    }

    pub(super) async fn delete_launch_template_version(
        &self,
        template: &LaunchTemplateRef,
    ) -> CloudResult<()> {
        let Some(found) = self
            .describe_launch_template(None, Some(&template.id))
            .await?
        else {
            return Ok(());
        };
        self.ensure_ours(
            format!("launch template {}", template.id),
            pairs(found.tags()),
        )?;
        // The default version cannot be deleted: the newest (the running release's)
        // becomes the default first, so that a retired release leaves no version behind.
        let latest = found.latest_version_number().unwrap_or(template.version);
        if found.default_version_number() == Some(template.version) && latest != template.version {
            self.ec2
                .modify_launch_template()
                .launch_template_id(&template.id)
                .default_version(latest.to_string())
                .send()
                .await
                .map_err(|e| sdk_error("ModifyLaunchTemplate", e))?;
        }
        let out = self
            .ec2
            .delete_launch_template_versions()
            .launch_template_id(&template.id)
            .versions(template.version.to_string())
            .send()
            .await
            .map_err(|e| sdk_error("DeleteLaunchTemplateVersions", e));
        // The call answers 200 even when a version was not deleted: each failure is in
        // UnsuccessfullyDeletedLaunchTemplateVersions with its code (API reference).
        let failure = match out {
            Ok(out) => out
                .unsuccessfully_deleted_launch_template_versions()
                .first()
                .and_then(|f| f.response_error())
                .map(|e| {
                    (
                        e.code().map_or("", |c| c.as_str()).to_string(),
                        e.message().unwrap_or_default().to_string(),
                    )
                }),
            Err(e) if code_of(&e).is_some_and(|c| c.contains("NotFound")) => None,
            Err(e) => return Err(e),
        };
        match failure {
            None => Ok(()),
            // Already gone.
            Some((code, _)) if code.contains("DoesNotExist") || code.contains("NotFound") => Ok(()),
            // The template's default version cannot be deleted on its own; it is harmless
            // (it launches nothing) and the next release adds a version beside it.
            Some(_) if found.default_version_number() == Some(template.version) => Ok(()),
            Some((code, message)) => Err(CloudError::Service {
                operation: "DeleteLaunchTemplateVersions",
                code,
                message,
            }),
        }
    }

    pub(super) async fn builders(&self, fleet: &str) -> CloudResult<Vec<Builder>> {
        let out = self
            .ec2
            .describe_instances()
            .filters(filter(format!("tag:{TAG_LINEAGE}"), &self.lineage))
            .filters(filter(format!("tag:{TAG_FLEET}"), fleet))
            .filters(filter(format!("tag:{TAG_ROLE}"), "builder"))
            .filters(
                Filter::builder()
                    .name("instance-state-name")
                    .values("pending")
                    .values("running")
                    .values("stopping")
                    .values("stopped")
                    .build(),
            )
            .send()
            .await
            .map_err(|e| sdk_error("DescribeInstances", e))?;
        Ok(out
            .reservations()
            .iter()
            .flat_map(|r| r.instances())
            .filter(|i| self.holder(pairs(i.tags())) == Holder::Ours)
            .filter_map(|i| {
                Some(Builder {
                    id: i.instance_id()?.to_string(),
                    name: tag_value(i.tags(), "Name"),
                })
            })
            .collect())
    }

    pub(super) async fn image_named(&self, name: &str) -> CloudResult<Option<(Image, Holder)>> {
        let out = self
            .ec2
            .describe_images()
            .owners("self")
            .filters(filter("name", name))
            .send()
            .await
            .map_err(|e| sdk_error("DescribeImages", e))?;
        Ok(out
            .images()
            .iter()
            .find(|i| i.state() != Some(&aws_sdk_ec2::types::ImageState::Deregistered))
            .map(|i| {
                let image = Image {
                    id: i.image_id().unwrap_or_default().to_string(),
                    state: image_state(i.state()),
                };
                (image, self.holder(pairs(i.tags())))
            }))
    }

    async fn launch_template(
        &self,
        name: &str,
    ) -> CloudResult<Option<aws_sdk_ec2::types::LaunchTemplate>> {
        self.describe_launch_template(Some(name), None).await
    }

    /// The launch template of this name or id, or `None` when there is none.
    async fn describe_launch_template(
        &self,
        name: Option<&str>,
        id: Option<&str>,
    ) -> CloudResult<Option<aws_sdk_ec2::types::LaunchTemplate>> {
        let out = self
            .ec2
            .describe_launch_templates()
            .set_launch_template_names(name.map(|n| vec![n.to_string()]))
            .set_launch_template_ids(id.map(|i| vec![i.to_string()]))
            .send()
            .await
            .map_err(|e| sdk_error("DescribeLaunchTemplates", e));
        match out {
            Ok(out) => Ok(out.launch_templates().first().cloned()),
            Err(e) if code_of(&e).is_some_and(|c| c.contains("NotFound")) => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub(super) async fn delete_launch_template(&self, id: &str) -> CloudResult<()> {
        let Some(template) = self.describe_launch_template(None, Some(id)).await? else {
            return Ok(());
        };
        self.ensure_ours(format!("launch template {id}"), pairs(template.tags()))?;
        match self
            .ec2
            .delete_launch_template()
            .launch_template_id(id)
            .send()
            .await
            .map_err(|e| sdk_error("DeleteLaunchTemplate", e))
        {
            Err(e) if code_of(&e).is_some_and(|c| c.contains("NotFound")) => Ok(()),
            other => other.map(|_| ()),
        }
    }

    pub(super) async fn launch_template_version_named(
        &self,
        template: &str,
        description: &str,
    ) -> CloudResult<Option<LaunchTemplateRef>> {
        let Some(found) = self.launch_template(template).await? else {
            return Ok(None);
        };
        if self.holder(pairs(found.tags())) != Holder::Ours {
            return Ok(None);
        }
        let id = found.launch_template_id().unwrap_or_default().to_string();
        let mut token = None;
        loop {
            let out = self
                .ec2
                .describe_launch_template_versions()
                .launch_template_id(&id)
                .set_next_token(token)
                .send()
                .await
                .map_err(|e| sdk_error("DescribeLaunchTemplateVersions", e))?;
            if let Some(version) = out
                .launch_template_versions()
                .iter()
                .find(|v| v.version_description() == Some(description))
                .and_then(|v| v.version_number())
            {
                return Ok(Some(LaunchTemplateRef { id, version }));
            }
            token = out.next_token().map(str::to_string);
            if token.is_none() {
                return Ok(None);
            }
        }
    }
}

/// Each subnet's id with its VPC's.
fn vpcs_of(subnets: &[aws_sdk_ec2::types::Subnet]) -> impl Iterator<Item = (String, String)> + '_ {
    subnets
        .iter()
        .filter_map(|s| Some((s.subnet_id()?.to_string(), s.vpc_id()?.to_string())))
}

/// The one VPC a fleet's subnets are in.
fn one_vpc(subnets: &[String], vpcs: BTreeSet<&str>) -> CloudResult<String> {
    match (vpcs.len(), vpcs.first()) {
        (1, Some(vpc)) => Ok(vpc.to_string()),
        (0, _) => Err(CloudError::NotFound(format!(
            "subnet(s) {}",
            subnets.join(", ")
        ))),
        _ => Err(CloudError::Invalid(format!(
            "subnets {} are in different VPCs; a fleet's subnets must share one VPC",
            subnets.join(", ")
        ))),
    }
}
