"""Images and their snapshots.

AWS pages:
- DeregisterImage: https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_DeregisterImage.html
- DeleteSnapshot: https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_DeleteSnapshot.html
"""

import unittest

from support import EmulatorTest, NO_DELAY, ec2_tags, unique


class ImagesTest(EmulatorTest):
    def image(self) -> tuple[str, list[str]]:
        """A new image of a new instance, and its EBS snapshots."""
        [instance] = self.run_instance()
        image = self.ec2.create_image(
            InstanceId=instance, Name=unique(), TagSpecifications=ec2_tags("image", *NO_DELAY)
        )["ImageId"]
        self.cleanup(self.ec2.deregister_image, ImageId=image)
        [described] = self.ec2.describe_images(ImageIds=[image])["Images"]
        snapshots = [
            m["Ebs"]["SnapshotId"] for m in described["BlockDeviceMappings"] if "Ebs" in m and m["Ebs"].get("SnapshotId")
        ]
        self.assertTrue(snapshots)
        return image, snapshots

    def snapshot_ids(self, ids: list[str]) -> list[str]:
        found = self.ec2.describe_snapshots(Filters=[{"Name": "snapshot-id", "Values": ids}])["Snapshots"]
        return [s["SnapshotId"] for s in found]

    def test_deregister_with_delete_associated_snapshots(self):
        """DeregisterImage with DeleteAssociatedSnapshots=true deletes the image's
        snapshots ("Specifies whether to delete the snapshots associated with the AMI
        during deregistration").
        https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_DeregisterImage.html"""
        image, snapshots = self.image()
        self.ec2.deregister_image(ImageId=image, DeleteAssociatedSnapshots=True)
        self.assertEqual(self.snapshot_ids(snapshots), [])

    def test_deregister_keeps_snapshots_by_default(self):
        """Without DeleteAssociatedSnapshots the snapshots remain ("Default: The
        snapshots are not deleted"), and can then be deleted.
        https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_DeregisterImage.html"""
        image, snapshots = self.image()
        self.ec2.deregister_image(ImageId=image)
        self.assertEqual(sorted(self.snapshot_ids(snapshots)), sorted(snapshots))
        for snapshot in snapshots:
            self.ec2.delete_snapshot(SnapshotId=snapshot)

    def test_snapshot_of_registered_image_is_in_use(self):
        """DeleteSnapshot of a snapshot a registered image uses: InvalidSnapshot.InUse
        ("You cannot delete a snapshot of the root device of an EBS volume used by a
        registered AMI").
        https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_DeleteSnapshot.html"""
        image, snapshots = self.image()
        self.assertError("InvalidSnapshot.InUse", self.ec2.delete_snapshot, SnapshotId=snapshots[0])


if __name__ == "__main__":
    unittest.main()
