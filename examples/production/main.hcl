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

# Makes fleet `api`.
module "api" {
  source          = "./modules/api"
  region          = "us-east-1"
  release         = var.release
  source_ami      = var.source_ami
  provision       = file("bake.sh")
  user_data       = templatefile("boot.sh", { release = var.release })
  subnets         = ["subnet-0a1b2c3d", "subnet-4e5f6a7b"]
  security_groups = ["sg-0123456789abcdef0"]
  errors_alarm    = "api-5xx-us-east-1"
}

# The same fleet in a second region, `api-west`: planned, released and retired there.
module "api-west" {
  source          = "./modules/api"
  region          = "us-west-2"
  release         = var.release
  source_ami      = var.source_ami
  provision       = file("bake.sh")
  user_data       = templatefile("boot.sh", { release = var.release })
  subnets         = ["subnet-1a2b3c4d", "subnet-5e6f7a8b"]
  security_groups = ["sg-0fedcba987654321f"]
  errors_alarm    = "api-5xx-us-west-2"
}
