# One web fleet behind an existing load balancer, gated on an existing alarm.
fleet "this" {
  release = var.release

  image {
    source_ami    = var.source_ami
    instance_type = var.instance_type
    provision     = var.provision
  }

  instances {
    instance_type   = var.instance_type
    subnets         = var.subnets
    security_groups = var.security_groups
    user_data       = var.user_data
    capacity {
      min     = var.capacity.min
      max     = var.capacity.max
      desired = var.capacity.desired
    }
  }

  traffic {
    load_balancer = var.load_balancer
    listener_port = var.listener_port
    port          = var.port
    health_check {
      path = "/healthz"
    }
  }

  rollout {
    steps = var.steps
    pause = "5m"

    gate "errors" {
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
