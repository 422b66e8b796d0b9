fleet "web" {
  image {
    source_ami    = "ami-1"
    instance_type = "t3.small"
  }

  instances {
    instance_type   = "t3.small"
    subnets         = ["subnet-a"]
    security_groups = ["sg-1"]

    root_volume {
      type = "io1"
      size = 30
    }

    metadata {
      http_tokens = "required"
    }

    spot {
      instance_types    = ["t3.small"]
      on_demand_percent = 20
    }

    scaling "cpu" {
      metric = "cpu"
      target = 50
    }

    capacity {
      min     = 2
      max     = 4
      desired = 2
    }
  }

  traffic {
    load_balancer = "web"
    port          = 8080
  }
}
