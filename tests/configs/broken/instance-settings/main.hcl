immune {
  default_tags = { "immune:fleet" = "mine" }
}

fleet "web" {
  image {
    source_ami    = "ami-1"
    instance_type = "t3-small"
  }

  instances {
    instance_type   = "t3.small"
    subnets         = ["subnet-a"]
    security_groups = ["sg-1"]
    tags            = { Name = "web" }

    root_volume {
      type = "io1"
      size = 30
    }

    metadata {
      http_tokens = "requried"
    }

    spot {
      on_demand_percent = 120
    }

    scaling "cpu" {
      metric = "memory"
      target = 50
    }

    capacity {
      min     = 2
      max     = 2
      desired = 2
    }
  }

  traffic {
    load_balancer = "web"
    port          = 8080
  }
}
