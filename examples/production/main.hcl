# A production-shaped fleet: credentials from an instance profile, IMDSv2, an encrypted
# gp3 root volume, part of the capacity on spot, target tracking on CPU and requests,
# tags on everything, and a second region.
#   immune plan --var release=v42
immune {
  backend "s3" {
    bucket = "acme-immune"
    key    = "api/state.json"
    region = "us-east-1"
  }
  default_tags = { env = "prod", owner = "platform" }
}

variable "release" {
  type        = string
  description = "The release to roll out, such as v42"
  default     = "v1"
}

variable "source_ami" {
  type    = string
  default = "ami-0123456789abcdef0"
}

locals {
  provision = file("bake.sh")
}

fleet "api" {
  region  = "us-east-1"
  release = var.release

  image {
    source_ami           = var.source_ami
    instance_type        = "m7i.large"
    provision            = local.provision
    bake_timeout         = "20m"
    iam_instance_profile = "api-builder" # may read the artifacts bucket
  }

  instances {
    instance_type        = "m7i.large"
    subnets              = ["subnet-0a1b2c3d", "subnet-4e5f6a7b"]
    security_groups      = ["sg-0123456789abcdef0"]
    user_data            = templatefile("boot.sh", { release = var.release })
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
      alarm = "api-5xx-us-east-1"
    }
  }
}

# The same fleet in a second region: planned, released and retired there.
fleet "api-west" {
  region  = "us-west-2"
  release = var.release

  image {
    source_ami           = var.source_ami
    instance_type        = "m7i.large"
    provision            = local.provision
    bake_timeout         = "20m"
    iam_instance_profile = "api-builder" # may read the artifacts bucket
  }

  instances {
    instance_type        = "m7i.large"
    subnets              = ["subnet-1a2b3c4d", "subnet-5e6f7a8b"]
    security_groups      = ["sg-0fedcba987654321f"]
    user_data            = templatefile("boot.sh", { release = var.release })
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
      alarm = "api-5xx-us-west-2"
    }
  }
}
