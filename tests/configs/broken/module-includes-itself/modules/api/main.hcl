module "again" {
  source = "../api"
}
