module "api" {
  source = "./modules/api"
}
