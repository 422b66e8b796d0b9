# A service released as a slow canary, gated on metrics of the new release's own target
# group: immune creates one alarm per release and gate, so the old release's numbers
# never hide a bad new one.
variable "release" {
  type = string
}

variable "source_ami" {
  type = string
}

variable "subnets" {
  type = list(string)
}

variable "security_groups" {
  type = list(string)
}

variable "load_balancer" {
  type = string
}

variable "port" {
  type    = number
  default = 8080

  validation {
    condition     = var.port >= 1024
    error_message = "port must be 1024 or above; the service does not run as root"
  }
}

variable "latency_p99" {
  type        = number
  description = "Seconds of p99 latency that fail a step"
  default     = 0.3
}

variable "gate_mode" {
  type        = string
  description = "enforce, dry-run (observe a new gate first) or manual"
  default     = "enforce"
}

locals {
  target = { TargetGroup = release.target_group, LoadBalancer = release.load_balancer }
}

fleet "this" {
  release = var.release

  image {
    source_ami    = var.source_ami
    instance_type = "t3.small"
  }

  instances {
    instance_type   = "t3.small"
    subnets         = var.subnets
    security_groups = var.security_groups
    capacity {
      min     = 2
      max     = 8
      desired = 2
    }
  }

  traffic {
    load_balancer = var.load_balancer
    port          = var.port
    health_check {
      path     = "/healthz"
      interval = "10s"
    }
  }

  rollout {
    steps          = [1, 5, 25, 50, 100]
    pause          = "10m"
    healthy_within = "10m"
    keep_previous  = 1

    gate "latency" {
      metric {
        namespace  = "AWS/ApplicationELB"
        name       = "TargetResponseTime"
        dimensions = local.target
        statistic  = "p99"
        period     = "60s"
        threshold  = var.latency_p99
        comparison = ">"
      }
      insufficient_data = "hold"
      mode              = var.gate_mode
    }

    gate "errors" {
      metric {
        namespace          = "AWS/ApplicationELB"
        name               = "HTTPCode_Target_5XX_Count"
        dimensions         = local.target
        statistic          = "Sum"
        period             = "60s"
        evaluation_periods = 2
        threshold          = 5
        comparison         = ">="
      }
      # No 5xx at all means no data points: that is good news.
      insufficient_data = "pass"
      mode              = var.gate_mode
    }
  }
}

output "name" {
  value = fleet.this.name
}

output "group" {
  value = fleet.this.group
}
