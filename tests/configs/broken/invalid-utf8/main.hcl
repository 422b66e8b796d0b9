variable "release" {
  default = "vÿ1"
}
