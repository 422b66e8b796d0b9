# Two fleets built from the reusable modules in modules/: a public web fleet with an
# alarm gate, and an internal API released as a canary on metric gates.
#   immune plan --var release=v3
variable "release" {
  type    = string
  default = "v1"
}

locals {
  subnets         = ["subnet-0a1b2c3d", "subnet-4e5f6a7b"]
  security_groups = ["sg-0123456789abcdef0"]
}

# Makes fleet `web` (the module's `fleet "this"` takes the call's name).
module "web" {
  source          = "../../modules/web-fleet"
  release         = var.release
  source_ami      = "ami-0123456789abcdef0"
  provision       = file("bake.sh")
  user_data       = templatefile("boot.sh", { release = var.release })
  subnets         = local.subnets
  security_groups = local.security_groups
  load_balancer   = "storefront"
  alarm           = "storefront-5xx"
  capacity        = { min = 2, max = 6, desired = 3 }
}

# Makes fleet `api`.
module "api" {
  source          = "../../modules/canary-fleet"
  release         = var.release
  source_ami      = "ami-0123456789abcdef0"
  subnets         = local.subnets
  security_groups = local.security_groups
  load_balancer   = "internal-api"
  port            = 9000
}

output "fleets" {
  value = [module.web.name, module.api.name]
}

output "web_group" {
  value = module.web.group
}
