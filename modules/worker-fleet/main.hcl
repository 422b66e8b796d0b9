# One fleet of queue workers, released by capacity and gated on an existing alarm.
fleet "this" {
  release = var.release

  image {
    source_ami    = var.source_ami
    instance_type = var.instance_type
    provision     = var.provision
  }

  instances {
    instance_type        = var.instance_type
    subnets              = var.subnets
    security_groups      = var.security_groups
    iam_instance_profile = var.iam_instance_profile
    user_data            = var.user_data
    termination_grace    = var.termination_grace
    capacity {
      min     = var.capacity.min
      max     = var.capacity.max
      desired = var.capacity.desired
    }
  }

  rollout {
    steps = var.steps
    pause = var.pause

    gate "backlog" {
      alarm = var.alarm
    }
  }
}

output "name" {
  value = fleet.this.name
}

output "group" {
  description = "The active group, known after apply"
  value       = fleet.this.group
}
