# A fleet of queue workers: no load balancer, so releases move capacity instead of
# traffic. The new group takes 25% of the workers, then half, then all of them; the old
# group gives up as many, and each of its workers finishes the job it holds before it
# goes (worker.sh). A rising queue or failing jobs at any step send the capacity back.
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
}

variable "queue" {
  type        = string
  description = "The SQS queue the workers read"
  default     = "orders"
}

fleet "orders-worker" {
  region  = "us-east-1"
  release = var.release

  image {
    source_ami    = "ami-0123456789abcdef0"
    instance_type = "t3.small"
    provision     = templatefile("bake.sh", { worker = file("worker.sh") })
  }

  instances {
    instance_type        = "t3.small"
    subnets              = ["subnet-0a1b2c3d", "subnet-4e5f6a7b"]
    security_groups      = ["sg-0123456789abcdef0"]
    iam_instance_profile = "orders-worker"
    user_data            = "#!/bin/sh\necho QUEUE=${var.queue} > /etc/default/jobs-worker\n"
    # A job may take up to 10 minutes; a worker still busy after that is cut off.
    termination_grace = "10m"
    capacity {
      min     = 2
      max     = 12
      desired = 4
    }
    scaling "cpu" {
      metric = "cpu"
      target = 60
    }
  }

  rollout {
    steps          = [25, 50, 100]
    pause          = "10m"
    healthy_within = "10m"

    # The queue backing up means the workers do not keep up.
    gate "backlog" {
      alarm = "orders-queue-depth"
    }

    # Jobs that fail on the new release's machines, counted by the workers themselves.
    gate "job-failures" {
      metric {
        namespace  = "Orders/Workers"
        name       = "JobFailures"
        dimensions = { AutoScalingGroupName = release.group }
        statistic  = "Sum"
        period     = "60s"
        threshold  = 5
        comparison = ">="
      }
      insufficient_data = "pass"
    }
  }
}

output "group" {
  description = "The group taking jobs after apply"
  value       = fleet.orders-worker.group
}
