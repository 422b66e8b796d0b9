# The smallest useful fleet: one web release behind an existing load balancer.
#   immune apply --var release=v1 --var-file surroundings.hcl
variable "release" {
  type        = string
  description = "The release to run, such as v1"
}

variable "subnets" { type = list(string) }
variable "security_groups" { type = list(string) }
variable "source_ami" { type = string }
variable "load_balancer" { type = string }
variable "alarm" {
  type        = string
  description = "An existing CloudWatch alarm that must stay out of ALARM while traffic shifts"
}

fleet "web" {
  release = var.release

  image {
    source_ami    = var.source_ami
    instance_type = "t3.small"
    provision     = file("bake.sh")
    name          = "quickstart-web-${var.release}"
  }

  instances {
    instance_type   = "t3.small"
    subnets         = var.subnets
    security_groups = var.security_groups
    user_data       = templatefile("boot.sh", { release = var.release })
    capacity {
      min     = 1
      max     = 3
      desired = 2
    }
  }

  traffic {
    load_balancer = var.load_balancer
    listener_port = 80
    port          = 8080
    health_check {
      path              = "/healthz"
      interval          = "10s"
      healthy_threshold = 2
    }
    deregistration_delay = "1s"
  }

  rollout {
    steps          = [25, 100]
    pause          = "10s"
    healthy_within = "2m"
    poll_interval  = "1s"

    gate "errors" {
      alarm = var.alarm
    }
  }
}
