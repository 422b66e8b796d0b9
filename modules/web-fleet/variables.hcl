variable "release" {
  type        = string
  description = "The release to roll out"
}

variable "source_ami" {
  type        = string
  description = "The image releases are baked from"
}

variable "instance_type" {
  type    = string
  default = "t3.small"
}

variable "provision" {
  type        = string
  description = "Script run on the builder instance while baking"
  default     = null
}

variable "user_data" {
  type        = string
  description = "Script run at every instance start"
  default     = null
}

variable "subnets" {
  type = list(string)
}

variable "security_groups" {
  type = list(string)
}

variable "load_balancer" {
  type        = string
  description = "The name of the Application Load Balancer in front of the fleet"
}

variable "listener_port" {
  type    = number
  default = 80
}

variable "port" {
  type    = number
  default = 8080
}

variable "capacity" {
  type    = map(number)
  default = { min = 2, max = 4, desired = 2 }

  validation {
    condition     = var.capacity.min <= var.capacity.desired && var.capacity.desired <= var.capacity.max
    error_message = "capacity needs min <= desired <= max"
  }
}

variable "steps" {
  type    = list(number)
  default = [10, 50, 100]
}

variable "alarm" {
  type        = string
  description = "An existing alarm that must stay out of ALARM while traffic shifts"
}
