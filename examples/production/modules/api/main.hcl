# The API fleet as production runs it, for one region: credentials from instance
# profiles, IMDSv2, an encrypted gp3 root volume, part of the capacity on spot, target
# tracking on CPU and requests. The fleet takes the name of the module call.
variable "region" {
  type = string
}

variable "release" {
  type = string
}

variable "source_ami" {
  type = string
}

variable "provision" {
  type      = string
  sensitive = true
}

variable "user_data" {
  type = string
}

variable "subnets" {
  type = list(string)
}

variable "security_groups" {
  type = list(string)
}

variable "errors_alarm" {
  type        = string
  description = "The CloudWatch alarm on the region's 5xx count"
}

fleet "this" {
  region  = var.region
  release = var.release

  image {
    source_ami           = var.source_ami
    instance_type        = "m7i.large"
    provision            = var.provision
    bake_timeout         = "20m"
    iam_instance_profile = "api-builder" # may read the artifacts bucket
  }

  instances {
    instance_type        = "m7i.large"
    subnets              = var.subnets
    security_groups      = var.security_groups
    user_data            = var.user_data
    iam_instance_profile = "api"
    key_name             = "ops"
    tags                 = { service = "api", team = "payments" }

    root_volume {
      size      = 40
      type      = "gp3"
      encrypted = true
      iops      = 3000
    }

    metadata {
      http_tokens = "required"
      hop_limit   = 1
    }

    spot {
      instance_types    = ["m7i.large", "m6i.large", "m7a.large"]
      on_demand_base    = 2
      on_demand_percent = 50
    }

    scaling "cpu" {
      metric = "cpu"
      target = 50
    }

    scaling "requests" {
      metric = "requests_per_target"
      target = 800
    }

    capacity {
      min     = 2
      max     = 20
      desired = 4
    }
  }

  traffic {
    load_balancer = "api"
    listener_port = 443
    port          = 8080
    health_check {
      path     = "/healthz"
      interval = "10s"
    }
    deregistration_delay = "60s"
  }

  rollout {
    steps          = [5, 25, 50, 100]
    pause          = "5m"
    healthy_within = "10m"
    keep_previous  = 1

    gate "errors" {
      alarm = var.errors_alarm
    }
  }
}
