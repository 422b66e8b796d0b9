# Blue/green: the new group takes all traffic in one step once it is healthy, and the
# previous group is kept scaled to zero so that `immune rollback` is instant.
#   immune plan --var release=v7
variable "release" {
  type    = string
  default = "v1"
}

variable "environment" {
  type    = string
  default = "staging"

  validation {
    condition     = var.environment == "staging" || var.environment == "production"
    error_message = "environment is staging or production"
  }
}

locals {
  production = var.environment == "production"
  capacity   = local.production ? { min = 3, max = 12, desired = 6 } : { min = 1, max = 2, desired = 1 }
}

fleet "checkout" {
  region  = "eu-west-1"
  release = var.release

  image {
    source_ami    = "ami-0fedcba9876543210"
    instance_type = "t3.medium"
    provision     = file("bake.sh")
    name          = format("checkout-%s-%s", var.environment, var.release)
  }

  instances {
    instance_type   = local.production ? "m6i.large" : "t3.medium"
    subnets         = ["subnet-0a1b2c3d", "subnet-4e5f6a7b", "subnet-8c9d0e1f"]
    security_groups = ["sg-0fedcba987654321f"]
    capacity {
      min     = local.capacity.min
      max     = local.capacity.max
      desired = local.capacity.desired
    }
  }

  traffic {
    listener_arn = "arn:aws:elasticloadbalancing:eu-west-1:123456789012:listener/app/checkout/50dc6c495c0c9188/f2f7dc8efc522ab2"
    port         = 8080
    health_check {
      path              = "/healthz"
      interval          = "15s"
      healthy_threshold = 3
    }
    deregistration_delay = "1m"
  }

  rollout {
    steps          = [100]
    pause          = "10m"
    healthy_within = "15m"
    keep_previous  = 1

    gate "errors" {
      alarm = "checkout-${var.environment}-5xx"
    }
    gate "orders" {
      # Orders must keep flowing; a person decides when the numbers look odd.
      metric {
        namespace  = "Checkout"
        name       = "OrdersPlaced"
        statistic  = "Sum"
        period     = "5m"
        threshold  = 1
        comparison = "<"
      }
      insufficient_data = "fail"
      mode              = local.production ? "manual" : "enforce"
    }
  }
}

output "active_group" {
  value = fleet.checkout.group
}
