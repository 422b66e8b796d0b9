variable "release" {
  type = string
}

fleet "web" {
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
}
