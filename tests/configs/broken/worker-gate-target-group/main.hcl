variable "release" {
  type    = string
  default = "v1"
}

fleet "worker" {
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

  rollout {
    steps = [10, 50, 100]
    pause = "1m"

    gate "failures" {
      metric {
        namespace  = "AWS/ApplicationELB"
        name       = "HTTPCode_Target_5XX_Count"
        dimensions = { TargetGroup = release.target_group }
        statistic  = "Sum"
        threshold  = 1
      }
    }
  }
}
