variable "release" {
  type    = string
  default = "v1"
}

fleet "f1" {
  release = var.release

  image {
    source_ami    = "ami-1"
    instance_type = "t3.small"
  }

  instances {
    instance_type   = "t3.small"
    subnets         = ["subnet-a"]
    security_groups = ["sg-1"]
    capacity {
      min     = 1
      max     = 3
      desired = 2
    }
  }

  traffic {
    load_balancer = "web"
    port          = 8080
  }

  rollout {
    steps = [10, 50, 100]
    pause = "1m"

    gate "errors" {
      alarm = "web-5xx"
    }
  }
}
