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
  description = "Script run on the builder instance while baking: installs the worker"
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

variable "iam_instance_profile" {
  type        = string
  description = "Lets a worker read its queue and complete its lifecycle action"
  default     = null
}

variable "termination_grace" {
  type        = string
  description = "How long a leaving worker may take to finish its job (30s to 2h)"
  default     = "15m"
}

variable "capacity" {
  type    = map(number)
  default = { min = 2, max = 8, desired = 4 }

  validation {
    condition     = var.capacity.min <= var.capacity.desired && var.capacity.desired <= var.capacity.max
    error_message = "capacity needs min <= desired <= max"
  }
}

variable "steps" {
  type        = list(number)
  description = "Percent of the workers on the new release at each step"
  default     = [25, 50, 100]
}

variable "pause" {
  type    = string
  default = "10m"
}

variable "alarm" {
  type        = string
  description = "An existing alarm (a queue's depth, failed jobs) that must stay out of ALARM while capacity moves"
}
