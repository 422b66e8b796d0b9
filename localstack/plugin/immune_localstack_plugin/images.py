"""DeregisterImage with DeleteAssociatedSnapshots, which moto ignores.

"DeleteAssociatedSnapshots: Specifies whether to delete the snapshots associated with
the AMI during deregistration. If a snapshot is associated with multiple AMIs, it is
not deleted, regardless of this setting. Default: The snapshots are not deleted."
https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_DeregisterImage.html

The answer lists each snapshot with its ReturnCode: success, or skipped when another
image still uses it. moto already refuses DeleteSnapshot of a snapshot a registered
image uses (InvalidSnapshot.InUse,
https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_DeleteSnapshot.html).
"""

from localstack.runtime import hooks


def _snapshots_of(image) -> list[str]:
    ids = []
    for mapping in image.block_device_mappings or []:
        snapshot = (mapping.get("Ebs") or {}).get("SnapshotId")
        if snapshot and snapshot not in ids:
            ids.append(snapshot)
    return ids


@hooks.on_infra_start()
def immune_model_deregister_image_snapshots() -> None:
    from moto.core.responses import ActionResult
    from moto.ec2.responses.amis import AmisResponse

    original = AmisResponse.deregister_image

    def deregister_image(self) -> ActionResult:
        if not self._get_bool_param("DeleteAssociatedSnapshots", False):
            return original(self)
        backend = self.ec2_backend
        image_id = self._get_param("ImageId")
        image = backend.amis.get(image_id)
        snapshots = _snapshots_of(image) if image is not None else []
        self.error_on_dryrun()
        backend.deregister_image(image_id)
        results = []
        for snapshot_id in snapshots:
            if any(snapshot_id in _snapshots_of(other) for other in backend.amis.values()):
                results.append({"SnapshotId": snapshot_id, "ReturnCode": "skipped"})
                continue
            if snapshot_id in backend.snapshots:
                backend.snapshots.pop(snapshot_id)
            results.append({"SnapshotId": snapshot_id, "ReturnCode": "success"})
        return ActionResult({"Return": True, "DeleteSnapshotResults": results})

    AmisResponse.deregister_image = deregister_image
