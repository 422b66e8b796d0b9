# A web fleet released as a canary: 5% of traffic first, then 25%, 50% and all of it,
# watched at every step by an existing alarm and a latency gate immune creates itself.
#   immune plan --var release=v2
immune {
  backend "local" {
    path = ".immune/state.json"
  }
}

variable "release" {
  type        = string
  description = "The release to roll out, such as v42"
  default     = "v1"

  validation {
    condition     = length(var.release) > 1
    error_message = "release must name the release, such as v42"
  }
}

variable "subnets" {
  type    = list(string)
  default = ["subnet-0a1b2c3d", "subnet-4e5f6a7b"]
}

variable "latency_threshold" {
  type        = number
  description = "Seconds of p99 latency that fail the canary"
  default     = 0.5
}

locals {
  name = "web"
  tags = { team = "storefront", service = local.name }
}

fleet "web" {
  region  = "us-east-1"
  release = var.release

  image {
    source_ami    = "ami-0123456789abcdef0"
    instance_type = "t3.small"
    provision     = file("bake.sh")
    name          = "${local.name}-${var.release}"
    keep          = 3
  }

  instances {
    instance_type   = "t3.small"
    subnets         = var.subnets
    security_groups = ["sg-0123456789abcdef0"]
    user_data       = templatefile("boot.sh", { release = var.release })
    capacity {
      min     = 2
      max     = 6
      desired = 3
    }
  }

  traffic {
    load_balancer = "storefront"
    listener_port = 80
    port          = 8080
    health_check {
      path              = "/healthz"
      interval          = "10s"
      healthy_threshold = 2
    }
    deregistration_delay = "30s"
  }

  rollout {
    steps          = [5, 25, 50, 100]
    pause          = "5m"
    healthy_within = "10m"

    # An alarm the team already has.
    gate "errors" {
      alarm = "storefront-5xx"
    }

    # A per-release alarm on the new target group's latency.
    gate "latency" {
      metric {
        namespace  = "AWS/ApplicationELB"
        name       = "TargetResponseTime"
        dimensions = { TargetGroup = release.target_group, LoadBalancer = release.load_balancer }
        statistic  = "p99"
        period     = "60s"
        threshold  = var.latency_threshold
        comparison = ">"
      }
      insufficient_data = "hold"
      mode              = "enforce"
    }
  }
}

output "group" {
  description = "The group serving traffic after apply"
  value       = fleet.web.group
}

output "capacity" {
  value = fleet.web.capacity
}
